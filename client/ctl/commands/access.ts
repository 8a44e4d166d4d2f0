/** Who may do what: `bind`, `unbind`, `bindings`, `grant [create]|list|delete`, `user create|list|delete|update`. */
import { InvalidArgumentError, Option, type Command } from 'commander';
import { confirm, withYes } from '../confirm.js';
import { UsageError } from '../errors.js';
import { labels, note, out, printJson, table, time } from '../output.js';
import { readPassword } from '../prompt.js';
import { collectPairs, withApi, withJson } from './shared.js';

interface Binding {
  id: string;
  keystore: string;
  enclave: string;
  robot?: string;
  selector?: Record<string, string>;
  grant: string | null;
  createdBy: string;
  createdAt: string;
  status?: 'active' | 'limited' | 'suspended';
  statusReason?: string;
}
interface Envelope {
  publish: string[];
  subscribe: string[];
}
interface Grant {
  id: string;
  user: string;
  keystore: string;
  pattern: string;
  capabilities: string[];
  robotSelector?: Record<string, string>;
  permissionsEnvelope?: Envelope;
  createdBy: string;
  createdAt: string;
}
interface User {
  name: string;
  role: string;
  createdAt: string;
  updatedAt: string;
}

const CAPABILITIES = ['read', 'manage', 'bind'];

function capabilities(value: string): string[] {
  const caps = value.split(',').map((c) => c.trim()).filter(Boolean);
  const bad = caps.filter((c) => !CAPABILITIES.includes(c));
  if (bad.length) throw new InvalidArgumentError(`unknown capability ${bad.join(', ')} (use read, manage, bind)`);
  if (caps.length === 0) throw new InvalidArgumentError('at least one of read, manage, bind');
  return [...new Set(caps)];
}

const userUrl = (name: string): string => `v1/users/${encodeURIComponent(name)}`;

const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), ...value.split(',').map((v) => v.trim()).filter(Boolean)];

/** The envelope options given, or undefined when none was (so an update leaves the envelope alone). */
function envelopeOf(o: { allowPublish?: string[]; allowSubscribe?: string[] }): Envelope | undefined {
  if (o.allowPublish === undefined && o.allowSubscribe === undefined) return undefined;
  return { publish: o.allowPublish ?? [], subscribe: o.allowSubscribe ?? [] };
}

const envelopeText = (e: Envelope | undefined): string =>
  e ? `publish ${e.publish.join(',') || 'nothing'}; subscribe ${e.subscribe.join(',') || 'nothing'}` : 'unbounded';

const ENVELOPE_HELP =
  'DDS topic, exact or ending in /** (rt/acme/**, rq/acme/**), repeatable: what manage may sign into permissions';

function describeGrant(g: Grant): string {
  const robots = g.robotSelector ? ` (robots ${labels(g.robotSelector)})` : '';
  const envelope = g.permissionsEnvelope ? ` (permissions: ${envelopeText(g.permissionsEnvelope)})` : '';
  return `${g.capabilities.join(',')} on ${g.keystore}:${g.pattern} to ${g.user}${robots}${envelope}: ${g.id}`;
}

interface GrantOptions {
  robotSelector?: Record<string, string>;
  allowPublish?: string[];
  allowSubscribe?: string[];
  json?: boolean;
}

export function register(program: Command): void {
  withJson(
    program
      .command('bind <keystore> <path>')
      .description('attach an enclave to one robot or to every robot matching a selector (prints only the binding id)')
      .option('--robot <name>', 'the robot')
      .option('--selector <k=v>', 'label selector, repeatable (all labels must match)', collectPairs),
  ).action(async (ks: string, enclave: string, o: { robot?: string; selector?: Record<string, string>; json?: boolean }) => {
    if ((o.robot === undefined) === (o.selector === undefined)) throw new UsageError('give either --robot NAME or --selector k=v');
    const target = o.robot !== undefined ? { robot: o.robot } : { selector: o.selector };
    const b = await withApi((api) => api.call<Binding>('POST', 'v1/bindings', { json: { keystore: ks, enclave, ...target } }));
    if (o.json) printJson(b);
    else out(b.id);
  });

  withYes(program.command('unbind <id>').description('remove a binding (see: enclavectl bindings)')).action(async (id: string, o: { yes?: boolean }) => {
    await confirm(`removing binding ${id} takes its enclave away from its robots at once`, o.yes);
    await withApi((api) => api.call('DELETE', `v1/bindings/${encodeURIComponent(id)}`));
    out(`removed binding ${id}`);
  });

  withJson(
    program
      .command('bindings')
      .description('bindings on enclaves you may read')
      .option('--keystore <name>', 'only this keystore')
      .option('--robot <name>', 'only bindings naming this robot'),
  ).action(async (o: { keystore?: string; robot?: string; json?: boolean }) => {
    const res = await withApi((api) => api.call<{ bindings: Binding[] }>('GET', 'v1/bindings'));
    // The API has no filters here; narrowing client-side keeps --json the API's shape.
    const bindings = res.bindings.filter((b) => (!o.keystore || b.keystore === o.keystore) && (!o.robot || b.robot === o.robot));
    if (o.json) return printJson({ bindings });
    if (bindings.length === 0) return note('no bindings');
    out(
      table(bindings, [
        { header: 'ID', value: (b) => b.id },
        { header: 'KEYSTORE', value: (b) => b.keystore },
        { header: 'ENCLAVE', value: (b) => b.enclave },
        { header: 'TARGET', value: (b) => (b.robot !== undefined ? `robot ${b.robot}` : `selector ${labels(b.selector)}`) },
        { header: 'VIA', value: (b) => b.grant ?? 'admin' },
        { header: 'STATUS', value: (b) => b.status ?? 'active' },
        { header: 'BY', value: (b) => b.createdBy },
        { header: 'CREATED', value: (b) => time(b.createdAt) },
      ]),
    );
  });

  const grant = program
    .command('grant')
    .description('grants: capabilities of a member on enclave paths of one keystore (admin)')
    .addHelpText('after', '\n"grant USER KS PATTERN --cap ..." is short for "grant create USER KS PATTERN --cap ...".');

  withJson(
    grant
      .command('create <user> <keystore> <pattern>', { isDefault: true })
      .description('give USER capabilities on enclaves matching PATTERN (/a/b exact, /a/* one level, /a/** any depth)')
      .requiredOption('--cap <list>', 'comma-separated: read, manage, bind', capabilities)
      .option('--robot-selector <k=v>', 'limit bind to robots with these labels, repeatable', collectPairs)
      .option('--allow-publish <topic>', ENVELOPE_HELP, collect)
      .option('--allow-subscribe <topic>', ENVELOPE_HELP, collect),
  ).action(async (user: string, ks: string, pattern: string, o: GrantOptions & { cap: string[] }) => {
    const envelope = envelopeOf(o);
    const g = await withApi((api) =>
      api.call<Grant>('POST', 'v1/grants', {
        json: {
          user,
          keystore: ks,
          pattern,
          capabilities: o.cap,
          ...(o.robotSelector ? { robotSelector: o.robotSelector } : {}),
          ...(envelope ? { permissionsEnvelope: envelope } : {}),
        },
      }),
    );
    if (o.json) printJson(g);
    else out(`granted ${describeGrant(g)}`);
  });

  withJson(
    grant
      .command('update <id>')
      .description("change a grant's capabilities, robot selector or permissions envelope; its bindings follow at once")
      .option('--cap <list>', 'comma-separated: read, manage, bind', capabilities)
      .option('--robot-selector <k=v>', 'replace the robot selector, repeatable', collectPairs)
      .option('--any-robot', 'remove the robot selector')
      .option('--allow-publish <topic>', ENVELOPE_HELP, collect)
      .option('--allow-subscribe <topic>', ENVELOPE_HELP, collect)
      .option('--unbounded', 'remove the permissions envelope'),
  ).action(async (id: string, o: GrantOptions & { cap?: string[]; anyRobot?: boolean; unbounded?: boolean }) => {
    const envelope = envelopeOf(o);
    if (o.anyRobot && o.robotSelector) throw new UsageError('give --robot-selector or --any-robot, not both');
    if (o.unbounded && envelope) throw new UsageError('give --allow-publish/--allow-subscribe or --unbounded, not both');
    const json = {
      ...(o.cap ? { capabilities: o.cap } : {}),
      ...(o.robotSelector ? { robotSelector: o.robotSelector } : o.anyRobot ? { robotSelector: {} } : {}),
      ...(envelope ? { permissionsEnvelope: envelope } : o.unbounded ? { permissionsEnvelope: null } : {}),
    };
    if (Object.keys(json).length === 0) throw new UsageError('nothing to change: give --cap, --robot-selector, --any-robot, --allow-publish, --allow-subscribe or --unbounded');
    const g = await withApi((api) => api.call<Grant>('PATCH', `v1/grants/${encodeURIComponent(id)}`, { json }));
    if (o.json) printJson(g);
    else out(`updated grant ${describeGrant(g)}`);
  });

  withJson(
    grant.command('list').description('grants').option('--user <name>', 'only this user').option('--keystore <name>', 'only this keystore'),
  ).action(async (o: { user?: string; keystore?: string; json?: boolean }) => {
    const res = await withApi((api) => api.call<{ grants: Grant[] }>('GET', 'v1/grants', { query: { user: o.user, keystore: o.keystore } }));
    if (o.json) return printJson(res);
    if (res.grants.length === 0) return note('no grants');
    out(
      table(res.grants, [
        { header: 'ID', value: (g) => g.id },
        { header: 'USER', value: (g) => g.user },
        { header: 'KEYSTORE', value: (g) => g.keystore },
        { header: 'PATTERN', value: (g) => g.pattern },
        { header: 'CAPS', value: (g) => g.capabilities.join(',') },
        { header: 'ROBOTS', value: (g) => (g.robotSelector ? labels(g.robotSelector) : 'any') },
        { header: 'PERMISSIONS', value: (g) => envelopeText(g.permissionsEnvelope) },
        { header: 'BY', value: (g) => g.createdBy },
        { header: 'CREATED', value: (g) => time(g.createdAt) },
      ]),
    );
  });

  withYes(grant.command('delete <id>').description('remove a grant and the bindings made through it')).action(async (id: string, o: { yes?: boolean }) => {
    await confirm(`deleting grant ${id} removes the bindings made through it: robots lose those enclaves at once`, o.yes);
    await withApi((api) => api.call('DELETE', `v1/grants/${encodeURIComponent(id)}`));
    out(`deleted grant ${id}`);
  });

  const user = program.command('user').description('users (admin)');
  const role = (): Option => new Option('--role <role>', 'admin or member').choices(['admin', 'member']);

  withJson(
    user
      .command('create <name>')
      .description('create a user; password from a prompt, ENCLAVECTL_NEW_PASSWORD or --password-stdin (12+ characters)')
      .addOption(role().default('member'))
      .option('--password-stdin', 'read the new password from stdin'),
  ).action(async (name: string, o: { role: string; passwordStdin?: boolean; json?: boolean }) => {
    const password = await readPassword({ envVar: 'ENCLAVECTL_NEW_PASSWORD', fromStdin: o.passwordStdin, prompt: `New password for ${name}: `, confirm: true });
    const u = await withApi((api) => api.call<User>('POST', 'v1/users', { json: { name, password, role: o.role } }));
    if (o.json) printJson(u);
    else out(`created user ${u.name} (${u.role})`);
  });

  withJson(user.command('list').description('users')).action(async (o: { json?: boolean }) => {
    const res = await withApi((api) => api.call<{ users: User[] }>('GET', 'v1/users'));
    if (o.json) return printJson(res);
    out(
      table(res.users, [
        { header: 'NAME', value: (u) => u.name },
        { header: 'ROLE', value: (u) => u.role },
        { header: 'CREATED', value: (u) => time(u.createdAt) },
        { header: 'UPDATED', value: (u) => time(u.updatedAt) },
      ]),
    );
  });

  withYes(user.command('delete <name>').description('delete a user with their grants and the bindings made through them')).action(
    async (name: string, o: { yes?: boolean }) => {
      await confirm(`deleting user ${name} removes their grants and the bindings made through them`, o.yes);
      await withApi((api) => api.call('DELETE', userUrl(name)));
      out(`deleted user ${name}`);
    },
  );

  withJson(
    user
      .command('update <name>')
      .description("change a user's role and/or password (their sessions end)")
      .addOption(role())
      .option('--password', 'set a new password (prompt, ENCLAVECTL_NEW_PASSWORD or --password-stdin)')
      .option('--password-stdin', 'read the new password from stdin'),
  ).action(async (name: string, o: { role?: string; password?: boolean; passwordStdin?: boolean; json?: boolean }) => {
    const wantsPassword = o.password === true || o.passwordStdin === true;
    if (!wantsPassword && o.role === undefined) throw new UsageError('nothing to change: give --role and/or --password');
    const password = wantsPassword
      ? await readPassword({ envVar: 'ENCLAVECTL_NEW_PASSWORD', fromStdin: o.passwordStdin, prompt: `New password for ${name}: `, confirm: true })
      : undefined;
    const u = await withApi((api) => api.call<User>('PATCH', userUrl(name), { json: { role: o.role, password } }));
    if (o.json) printJson(u);
    else out(`updated user ${u.name} (${u.role}${password ? ', new password' : ''})`);
  });
}
