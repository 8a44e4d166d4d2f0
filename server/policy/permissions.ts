import type { Document, Element, Node } from '@xmldom/xmldom';
import { readAsset } from './assets.js';
import { PolicyError } from './errors.js';
import { domainIdProblem, enclaveNameProblem } from './names.js';
import { XINCLUDE_NAMESPACES } from './xinclude.js';
import {
  ELEMENT_NODE,
  XML_NS,
  childElements,
  el,
  isNamespaceDeclaration,
  isPlain,
  parseXml,
  serializePretty,
  textEl,
  type XmlElement,
} from './xml.js';

/**
 * sros2's policy → permissions transform (`sros2/policy/templates/dds/permissions.xsl` plus the domain
 * id substitution sros2 does afterwards), in TypeScript.
 *
 * For each enclave, one `<grant>` per `<profiles>`: subject `CN=<path>`, the validity, a `<deny_rule>`
 * if any entry says DENY, an `<allow_rule>` if any says ALLOW, optionally the `ros_discovery_info`
 * rule, then `<default>DENY</default>`. Inside a rule each profile entry contributes one group of
 * mangled names per direction; the groups are sorted by their first name (stable, byte order: what
 * libxslt's `xsl:sort` does), concatenated, and later duplicates are dropped. That is why the result is
 * not simply sorted (see deny_mix_example).
 *
 * The policy must have its XIncludes resolved (`loadPolicy`) and should have passed `policy.xsd` (sros2
 * validates before transforming). Entries the transform has no rule for are refused here with a
 * PolicyError rather than turned into the junk XSLT would output.
 */

export interface PermissionsParams {
  /** Validity of the enclave's certificate; written in UTC to the second, like sros2. */
  notBefore: Date;
  notAfter: Date;
  /** The keystore's DDS domain id, written into every rule. */
  domainId: number;
  /**
   * Add the rule allowing `ros_discovery_info` (sros2 adds it for Fast DDS, Cyclone DDS and Connext, i.e.
   * always in practice; without it those RMWs cannot exchange the ROS graph).
   */
  discoveryRule: boolean;
}

export interface EnclavePermissionsParams extends PermissionsParams {
  /** The `<enclave path="...">` to write permissions for. */
  enclavePath: string;
}

/**
 * The permissions.xml of one enclave (what sros2 writes into that enclave's folder): the grants of the
 * policy's first `<enclave>` whose path equals `enclavePath` (sros2 takes the first, too).
 */
export function policyToPermissions(policyXml: string, params: EnclavePermissionsParams): string {
  const enclaves = policyEnclaves(parsePolicy(policyXml));
  const enclave = enclaves.find((e) => enclavePathOf(e) === params.enclavePath);
  if (!enclave) {
    const known = [...new Set(enclaves.map(enclavePathOf))];
    const list = known.length > 10 ? `${known.slice(0, 10).join(', ')}, ...` : known.join(', ');
    throw new PolicyError(
      `the policy has no enclave ${JSON.stringify(params.enclavePath)}${known.length ? ` (it has: ${list})` : ''}`,
      { enclave: params.enclavePath },
    );
  }
  const grants = enclaveGrants(enclave, params);
  if (grants.length === 0) {
    throw new PolicyError(`enclave ${JSON.stringify(params.enclavePath)} has no <profiles>`, { enclave: params.enclavePath });
  }
  return writePermissions(grants);
}

/**
 * The transform applied to the whole policy: every enclave's grants in one document. This is the
 * shape of sros2's transform output (and of the fixture goldens); an enclave folder gets
 * `policyToPermissions` instead.
 */
export function policyToPermissionsAll(policyXml: string, params: PermissionsParams): string {
  const grants = policyEnclaves(parsePolicy(policyXml)).flatMap((e) => enclaveGrants(e, params));
  if (grants.length === 0) throw new PolicyError('the policy has no enclave with <profiles>');
  return writePermissions(grants);
}

/** The enclave paths of a policy, in document order, each once (sros2 uses the first of duplicates). */
export function policyEnclavePaths(policyXml: string): string[] {
  return [...new Set(policyEnclaves(parsePolicy(policyXml)).map(enclavePathOf))];
}

/**
 * The allow-all permissions `ros2 security create_enclave` writes when no policy is given: sros2's
 * default policy (`default.policy.xml`, path `/`) with the path set to the enclave, transformed with the
 * discovery rule (as sros2 does for every DDS vendor it ships for). Same XML as sros2's
 * `default_permissions_template.xml` with the placeholders filled in.
 */
export function defaultPermissions(enclavePath: string, notBefore: Date, notAfter: Date, domainId: number): string {
  const problem = enclaveNameProblem(enclavePath);
  if (problem) throw new RangeError(`enclave name ${problem}`);
  const enclave = policyEnclaves(parsePolicy(readAsset('default.policy.xml')))[0]!;
  return writePermissions(enclaveGrants(enclave, { notBefore, notAfter, domainId, discoveryRule: true }, enclavePath));
}

/** `YYYY-MM-DDTHH:MM:SS` in UTC without a zone suffix: how sros2 writes validity (DDS reads it as UTC). */
export function formatValidityDate(date: Date): string {
  const t = date instanceof Date ? date.getTime() : NaN;
  if (Number.isNaN(t)) throw new RangeError('validity date is not a valid Date');
  const year = date.getUTCFullYear();
  if (year < 0 || year > 9999) throw new RangeError('validity date must be between year 0 and 9999');
  return date.toISOString().slice(0, 19);
}

// ---------------------------------------------------------------------------------------------------

/**
 * The last policy parsed: issuing a keystore's enclaves calls `policyToPermissions` once per enclave
 * with the same text, and a large policy takes a while to parse. Parsed documents are never modified.
 */
let lastParsed: { xml: string; doc: Document } | undefined;

function parsePolicy(policyXml: string): Document {
  if (lastParsed && lastParsed.xml === policyXml) return lastParsed.doc;
  const doc = parseXml(policyXml, 'policy');
  if (!isPlain(doc.documentElement!, 'policy')) throw new PolicyError('the root element of a policy must be <policy>');
  for (const ns of XINCLUDE_NAMESPACES) {
    if (doc.getElementsByTagNameNS(ns, '*').length > 0) {
      throw new PolicyError('the policy still contains xi:include elements: resolve its includes first');
    }
  }
  lastParsed = { xml: policyXml, doc };
  return doc;
}

function policyEnclaves(doc: Document): Element[] {
  return childElements(doc.documentElement!)
    .filter((c) => isPlain(c, 'enclaves'))
    .flatMap((enclaves) => childElements(enclaves).filter((c) => isPlain(c, 'enclave')));
}

function enclavePathOf(enclave: Element): string {
  return enclave.getAttribute('path') ?? '';
}

type Qualifier = 'ALLOW' | 'DENY';
type Kind = 'topics' | 'services' | 'actions';

/** Per kind: its item element and its qualifier attributes, in the order the XSLT applies them. */
const KINDS: Record<Kind, { item: string; modes: readonly string[] }> = {
  topics: { item: 'topic', modes: ['publish', 'subscribe'] },
  services: { item: 'service', modes: ['request', 'reply'] },
  actions: { item: 'action', modes: ['call', 'execute'] },
};

interface Entry {
  kind: Kind;
  /** Mode → qualifier, only for the modes present. */
  modes: Map<string, Qualifier>;
  /** Fully qualified names (ns/node applied), in policy order. */
  names: string[];
}

/** `path` overrides the enclave's own (the default policy's `/` is rewritten to the enclave, as sros2 does). */
function enclaveGrants(enclave: Element, params: PermissionsParams, path = enclavePathOf(enclave)): XmlElement[] {
  const validity = el('validity', [
    textEl('not_before', formatValidityDate(params.notBefore)),
    textEl('not_after', formatValidityDate(params.notAfter)),
  ]);
  if (params.notAfter.getTime() <= params.notBefore.getTime()) throw new RangeError('notAfter must be after notBefore');
  const idProblem = domainIdProblem(params.domainId);
  if (idProblem) throw new RangeError(`domain id ${idProblem}`);
  const domains = el('domains', [textEl('id', String(params.domainId))]);

  return childElements(enclave)
    .filter((c) => isPlain(c, 'profiles'))
    .map((profiles) => {
      const entries = childElements(profiles)
        .filter((c) => isPlain(c, 'profile'))
        .flatMap((profile) => childElements(profile).map((e) => readEntry(e, profile, path)));
      const rules: XmlElement[] = [];
      for (const [qualifier, name] of [['DENY', 'deny_rule'], ['ALLOW', 'allow_rule']] as const) {
        const rule = buildRule(entries, qualifier, name, domains);
        if (rule) rules.push(rule);
      }
      if (params.discoveryRule) {
        const discovery = el('topics', [textEl('topic', 'ros_discovery_info')]);
        rules.push(el('allow_rule', [domains, el('publish', [discovery]), el('subscribe', [discovery])]));
      }
      return el(
        'grant',
        [textEl('subject_name', `CN=${path}`), validity, ...rules, textEl('default', 'DENY')],
        [['name', path]],
      );
    });
}

function readEntry(entry: Element, profile: Element, enclavePath: string): Entry {
  const where = `enclave ${JSON.stringify(enclavePath)}, profile node=${JSON.stringify(profile.getAttribute('node') ?? '')}`;
  const kind = (['topics', 'services', 'actions'] as const).find((k) => isPlain(entry, k));
  if (!kind) throw new PolicyError(`${where}: unexpected <${entry.nodeName}> (expected topics, services or actions)`);
  const { item, modes: allowed } = KINDS[kind];

  const modes = new Map<string, Qualifier>();
  for (let i = 0; i < entry.attributes.length; i++) {
    const a = entry.attributes.item(i)!;
    if (isNamespaceDeclaration(a.name, a.namespaceURI) || a.namespaceURI === XML_NS) continue;
    if (a.namespaceURI || !allowed.includes(a.name)) {
      throw new PolicyError(`${where}: <${kind}> has unexpected attribute ${a.name} (allowed: ${allowed.join(', ')})`);
    }
    if (a.value !== 'ALLOW' && a.value !== 'DENY') {
      throw new PolicyError(`${where}: <${kind} ${a.name}="${a.value}"> must be ALLOW or DENY`);
    }
    modes.set(a.name, a.value);
  }

  const ns = profile.getAttribute('ns') ?? '';
  const node = profile.getAttribute('node') ?? '';
  const names = childElements(entry).map((c) => {
    if (!isPlain(c, item)) throw new PolicyError(`${where}: <${kind}> may contain only <${item}>, not <${c.nodeName}>`);
    return qualifyName(stringValue(c), ns, node);
  });
  return { kind, modes, names };
}

/** The XSLT's name rule: `/x` as is, `~x` → ns + node + x, else ns + name (ns ends with `/`). */
function qualifyName(name: string, ns: string, node: string): string {
  if (name.startsWith('/')) return name;
  const prefix = ns.endsWith('/') ? ns : `${ns}/`;
  if (name.startsWith('~')) return prefix + node + name.slice(1);
  return prefix + name;
}

/** XPath string value after `xsl:strip-space elements="*"`: whitespace-only text nodes do not count. */
function stringValue(node: Node): string {
  let out = '';
  for (let c = node.firstChild; c; c = c.nextSibling) {
    if (c.nodeType === 3 || c.nodeType === 4) {
      const v = c.nodeValue ?? '';
      if (v.trim() !== '' || c.nodeType === 4) out += v;
    } else if (c.nodeType === ELEMENT_NODE) {
      out += stringValue(c);
    }
  }
  return out;
}

const ACTION_GOAL_SERVICES = ['cancel_goal', 'get_result', 'send_goal'] as const;
const ACTION_TOPICS = ['feedback', 'status'] as const;

/** The publish and subscribe groups one entry adds for one mode (the XSLT's mode templates). */
function mangle(kind: Kind, mode: string, names: readonly string[]): { publish: string[]; subscribe: string[] } {
  const requests = names.map((n) => `rq${n}Request`);
  const replies = names.map((n) => `rr${n}Reply`);
  const goalRequests = names.flatMap((n) => ACTION_GOAL_SERVICES.map((s) => `rq${n}/_action/${s}Request`));
  const serverSide = names.flatMap((n) => [
    ...ACTION_GOAL_SERVICES.map((s) => `rr${n}/_action/${s}Reply`),
    ...ACTION_TOPICS.map((t) => `rt${n}/_action/${t}`),
  ]);
  switch (`${kind}:${mode}`) {
    case 'topics:publish':
      return { publish: names.map((n) => `rt${n}`), subscribe: [] };
    case 'topics:subscribe':
      return { publish: [], subscribe: names.map((n) => `rt${n}`) };
    case 'services:request':
      return { publish: requests, subscribe: replies };
    case 'services:reply':
      return { publish: replies, subscribe: requests };
    case 'actions:call':
      return { publish: goalRequests, subscribe: serverSide };
    case 'actions:execute':
      return { publish: serverSide, subscribe: goalRequests };
    default:
      throw new Error(`no mangling for ${kind}:${mode}`);
  }
}

function buildRule(entries: readonly Entry[], qualifier: Qualifier, ruleName: string, domains: XmlElement): XmlElement | null {
  const publish: string[][] = [];
  const subscribe: string[][] = [];
  let any = false;
  for (const entry of entries) {
    for (const mode of KINDS[entry.kind].modes) {
      if (entry.modes.get(mode) !== qualifier) continue;
      any = true;
      const groups = mangle(entry.kind, mode, entry.names);
      // Each mode template emits a <publish> and/or <subscribe> block, even an empty one.
      if (mode !== 'subscribe') publish.push(groups.publish);
      if (mode !== 'publish') subscribe.push(groups.subscribe);
    }
  }
  if (!any) return null;
  const children: XmlElement[] = [domains];
  if (publish.length > 0) children.push(el('publish', [el('topics', orderTopics(publish).map((t) => textEl('topic', t)))]));
  if (subscribe.length > 0) children.push(el('subscribe', [el('topics', orderTopics(subscribe).map((t) => textEl('topic', t)))]));
  return el(ruleName, children);
}

/**
 * The XSLT's "sort" and "prune" passes: groups ordered by their first topic (byte order, stable, an
 * empty group sorting as ""), then only the first of equal topics kept.
 */
function orderTopics(groups: readonly string[][]): string[] {
  const keyed = groups.map((g) => ({ g, key: Buffer.from(g[0] ?? '', 'utf8') }));
  keyed.sort((a, b) => Buffer.compare(a.key, b.key)); // Array.prototype.sort is stable
  return [...new Set(keyed.flatMap((k) => k.g))];
}

export function writePermissions(grants: XmlElement[]): string {
  return serializePretty(
    el(
      'dds',
      [el('permissions', grants)],
      [
        ['xmlns:xsi', 'http://www.w3.org/2001/XMLSchema-instance'],
        ['xsi:noNamespaceSchemaLocation', 'http://www.omg.org/spec/DDS-SECURITY/20170901/omg_shared_ca_permissions.xsd'],
      ],
    ),
  );
}
