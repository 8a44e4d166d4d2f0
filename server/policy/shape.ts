import type { Document, Element } from '@xmldom/xmldom';
import { PolicyError } from './errors.js';
import { childElements } from './xml.js';

/**
 * policy.xsd's element tree, by name: what may appear inside what (`metadata` holds anything). Checked on
 * a resolved policy before it is serialized and given to the XSD validator: a document of 90 000 elements
 * that is not a policy at all is refused in milliseconds instead of after seconds of serializing and
 * validating. It is only a first filter; the schema still decides attributes, order and counts.
 */
const CHILDREN: Record<string, readonly string[]> = {
  policy: ['enclaves'],
  enclaves: ['enclave'],
  enclave: ['profiles'],
  profiles: ['profile', 'metadata'],
  profile: ['topics', 'services', 'actions'],
  topics: ['topic'],
  services: ['service'],
  actions: ['action'],
  topic: [],
  service: [],
  action: [],
};

export function checkPolicyShape(doc: Document): void {
  const root = doc.documentElement!;
  if (root.namespaceURI || root.localName !== 'policy') throw new PolicyError(`the root element of a policy must be <policy>, not <${root.nodeName}>`);
  const todo: Element[] = [root];
  while (todo.length > 0) {
    const parent = todo.pop()!;
    for (const c of childElements(parent)) if (checkPolicyChild(parent, c)) todo.push(c);
  }
}

/**
 * Throws when `child` may not appear inside `parent` in a policy; false when nothing below `child` is
 * checked (it is inside `metadata`). Given to the XInclude resolution, it stops a bad include tree at its
 * first misplaced element, before the rest is built.
 */
export function checkPolicyChild(parent: Element, child: Element): boolean {
  const allowed = CHILDREN[parent.localName ?? ''];
  if (allowed === undefined) return false;
  if (child.namespaceURI || !allowed.includes(child.localName ?? '')) {
    const expected = allowed.length ? ` (expected ${allowed.map((a) => `<${a}>`).join(' or ')})` : '';
    throw new PolicyError(`policy: <${child.nodeName}> is not expected inside <${parent.nodeName}>${expected}`);
  }
  return child.localName !== 'metadata';
}
