/**
 * Real inputs for the real server, made from the sros2 fixtures in test/fixtures/sros2:
 * - a policy folder (`*.policy.xml` plus its `common/` includes) as the base64 `.tar.gz` that
 *   `POST /v1/keystores/{ks}/enclaves` takes as `policyArchive`;
 * - an sros2 keystore (sros2's own CA, CA key and governance) holding enclaves whose certificate and
 *   permissions have chosen validity dates, for `POST /v1/keystores/{ks}/import`. This is how a test gets
 *   the real server to serve an enclave that expires a few seconds from now: the API issues whole days only.
 * Everything is made with the `tar` and `openssl` CLIs, the way sros2 makes its files.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { FIXTURES } from './tools.js';

export const SROS2_FIXTURES = FIXTURES;
export const POLICIES_DIR = join(SROS2_FIXTURES, 'policies');
export const FIXTURE_KEYSTORE = join(SROS2_FIXTURES, 'talker-listener-keystore.tar.gz');

/** base64 of a `.tar.gz` of `members` (files or folders) taken from `dir`. */
export function policyArchive(members: string[], dir = POLICIES_DIR): string {
  return execFileSync('tar', ['-czf', '-', '-C', dir, ...members], { maxBuffer: 64 * 1024 * 1024 }).toString('base64');
}

/** sros2's talker/listener policy with its xi:includes (`common/`), as sent in `policyArchive`. */
export function talkerListenerPolicyArchive(): string {
  return policyArchive(['talker_listener.policy.xml', 'common']);
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** `YYMMDDHHMMSSZ` for `openssl ca -startdate/-enddate`. */
function caStamp(d: Date): string {
  return d.toISOString().replace(/[-:T]/g, '').replace(/\.\d+Z$/, 'Z').slice(2);
}

/** `YYYY-MM-DDTHH:MM:SS` (UTC) as sros2 writes permission validity. */
function ddsStamp(d: Date): string {
  return d.toISOString().replace(/\.\d+Z$/, '');
}

export interface DatedEnclave {
  path: string;
  notBefore: Date;
  notAfter: Date;
}

/**
 * The fixture keystore with its two enclaves replaced by `enclaves`: for each, a new P-256 key, a
 * certificate `CN=<path>` signed by the fixture CA with exactly the given dates (second precision), and
 * permissions (the fixture talker's rules) with the same validity, signed by the CA as sros2 does
 * (`openssl smime -sign -text`). Returns the `.tar.gz` bytes.
 */
export function datedKeystoreArchive(work: string, enclaves: DatedEnclave[]): Buffer {
  fs.mkdirSync(work, { recursive: true });
  execFileSync('tar', ['-xzf', FIXTURE_KEYSTORE, '-C', work]);
  const ks = join(work, 'keystore');
  const caCert = join(ks, 'public/ca.cert.pem');
  const caKey = join(ks, 'private/ca.key.pem');
  const template = fs.readFileSync(join(ks, 'enclaves/talker_listener/talker/permissions.xml'), 'utf8');
  fs.rmSync(join(ks, 'enclaves/talker_listener'), { recursive: true });

  const ca = join(work, 'ca');
  fs.mkdirSync(ca);
  fs.writeFileSync(join(ca, 'index.txt'), '');
  const serial = randomBytes(16);
  serial[0] = (serial[0]! & 0x7f) | 0x10; // positive, 16 bytes, unique
  fs.writeFileSync(join(ca, 'serial'), `${serial.toString('hex')}\n`);
  fs.writeFileSync(join(ca, 'ext.cnf'), 'basicConstraints=critical,CA:FALSE\n');
  fs.writeFileSync(
    join(ca, 'ca.cnf'),
    [
      '[ca]',
      'default_ca = fixture',
      '[fixture]',
      `dir = ${ca}`,
      'database = $dir/index.txt',
      'serial = $dir/serial',
      'new_certs_dir = $dir',
      `certificate = ${caCert}`,
      `private_key = ${caKey}`,
      'default_md = sha256',
      'policy = any',
      'unique_subject = no',
      'email_in_dn = no',
      '[any]',
      'commonName = supplied',
      '',
    ].join('\n'),
  );

  // The fixture CA has fixed dates (made when the fixture was): a new certificate for its key, valid from a
  // day before the first enclave to a year after the last (or after now), keeps this helper free of any
  // calendar date. governance.p7s is signed again by it, as sros2 would.
  const day = 86_400_000;
  const caFrom = new Date(Math.min(...enclaves.map((e) => e.notBefore.getTime()), Date.now()) - day);
  const caTo = new Date(Math.max(...enclaves.map((e) => e.notAfter.getTime()), Date.now()) + 365 * day);
  fs.writeFileSync(join(ca, 'ca-ext.cnf'), 'basicConstraints=critical,CA:TRUE,pathlen:1\n');
  openssl(['req', '-new', '-key', caKey, '-subj', '/CN=sros2CA', '-out', join(ca, 'ca.csr')], ca);
  openssl(
    ['ca', '-batch', '-selfsign', '-config', 'ca.cnf', '-keyfile', caKey, '-extfile', 'ca-ext.cnf', '-in', 'ca.csr', '-notext',
      '-out', join(ca, 'ca.cert.pem'), '-startdate', caStamp(caFrom), '-enddate', caStamp(caTo)],
    ca,
  );
  fs.copyFileSync(join(ca, 'ca.cert.pem'), caCert); // identity_ca and permissions_ca link to it
  openssl(['smime', '-sign', '-text', '-in', join(ks, 'enclaves/governance.xml'), '-out', join(ks, 'enclaves/governance.p7s'), '-signer', caCert, '-inkey', caKey], ca);

  for (const e of enclaves) {
    const dir = join(ks, 'enclaves', e.path.slice(1));
    fs.mkdirSync(dir, { recursive: true });
    openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', join(dir, 'key.pem')], ca);
    openssl(['req', '-new', '-key', join(dir, 'key.pem'), '-subj', `/CN=${e.path.replaceAll('/', '\\/')}`, '-out', join(ca, 'req.csr')], ca);
    openssl(
      ['ca', '-batch', '-config', 'ca.cnf', '-extfile', 'ext.cnf', '-in', 'req.csr', '-notext', '-out', join(dir, 'cert.pem'),
        '-startdate', caStamp(e.notBefore), '-enddate', caStamp(e.notAfter)],
      ca,
    );
    const permissions = template
      .replace(/<grant name="[^"]*">/, `<grant name="${e.path}">`)
      .replace(/<subject_name>[^<]*<\/subject_name>/, `<subject_name>CN=${e.path}</subject_name>`)
      .replace(/<not_before>[^<]*<\/not_before>/, `<not_before>${ddsStamp(e.notBefore)}</not_before>`)
      .replace(/<not_after>[^<]*<\/not_after>/, `<not_after>${ddsStamp(e.notAfter)}</not_after>`);
    fs.writeFileSync(join(dir, 'permissions.xml'), permissions);
    openssl(['smime', '-sign', '-text', '-in', join(dir, 'permissions.xml'), '-out', join(dir, 'permissions.p7s'), '-signer', caCert, '-inkey', caKey], ca);
    // The links sros2 puts in every enclave folder.
    const link = (target: string, name: string): void => fs.symlinkSync(relative(dir, target), join(dir, name));
    link(join(ks, 'public/identity_ca.cert.pem'), 'identity_ca.cert.pem');
    link(join(ks, 'public/permissions_ca.cert.pem'), 'permissions_ca.cert.pem');
    link(join(ks, 'enclaves/governance.p7s'), 'governance.p7s');
  }
  return execFileSync('tar', ['-czf', '-', '-C', dirname(ks), 'keystore'], { maxBuffer: 64 * 1024 * 1024 });
}
