/** DDS-Security permissions XML, read for display: per rule (allow/deny), per direction, the topics. */
export interface PermissionRule {
  kind: 'allow' | 'deny';
  domains: string[];
  direction: 'publish' | 'subscribe' | 'relay';
  topics: string[];
  partitions: string[];
}

export interface ReadablePermissions {
  subject: string;
  notBefore: string;
  notAfter: string;
  rules: PermissionRule[];
  default: string;
}

const texts = (parent: Element, selector: string): string[] => [...parent.querySelectorAll(selector)].map((n) => (n.textContent ?? '').trim());

/** Parsed with the browser's DOMParser (an XML document: no script runs, nothing is fetched). */
export function readPermissions(xml: string): ReadablePermissions[] {
  const doc = new DOMParser().parseFromString(xml, 'application/xml');
  if (doc.querySelector('parsererror')) throw new Error('the permissions document is not well-formed XML');
  return [...doc.querySelectorAll('permissions > grant')].map((g) => {
    const rules: PermissionRule[] = [];
    for (const rule of g.children) {
      const kind = rule.localName === 'allow_rule' ? 'allow' : rule.localName === 'deny_rule' ? 'deny' : null;
      if (!kind) continue;
      const domains = [...texts(rule, 'domains > id'), ...[...rule.querySelectorAll('domains > id_range')].map((r) => `${texts(r, 'min')[0] ?? ''}–${texts(r, 'max')[0] ?? ''}`)];
      for (const dir of rule.children) {
        if (dir.localName !== 'publish' && dir.localName !== 'subscribe' && dir.localName !== 'relay') continue;
        rules.push({ kind, domains, direction: dir.localName, topics: texts(dir, 'topics > topic'), partitions: texts(dir, 'partitions > partition') });
      }
    }
    return {
      subject: texts(g, 'subject_name')[0] ?? '',
      notBefore: texts(g, 'validity > not_before')[0] ?? '',
      notAfter: texts(g, 'validity > not_after')[0] ?? '',
      rules,
      default: texts(g, ':scope > default')[0] ?? '',
    };
  });
}
