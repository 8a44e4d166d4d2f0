import type { AllowedTopics } from '../acl/envelope.js';
import { domainIdProblem, enclaveNameProblem } from './names.js';
import { formatValidityDate, writePermissions } from './permissions.js';
import { childElements, el, isPlain, parseXml, textEl } from './xml.js';

/**
 * The topics a permissions.xml allows, per direction, from every `<allow_rule>` of every grant (deny rules only
 * take away). Used to hold what a member signs inside their grant's permissions envelope.
 */
export function allowedTopics(permissionsXml: string): AllowedTopics {
  const doc = parseXml(permissionsXml, 'permissions');
  const publish = new Set<string>();
  const subscribe = new Set<string>();
  const children = (parents: ReturnType<typeof childElements>, name: string) =>
    parents.flatMap((p) => childElements(p).filter((c) => isPlain(c, name)));
  const rules = children(children(children([doc.documentElement!], 'permissions'), 'grant'), 'allow_rule');
  for (const [direction, into] of [['publish', publish], ['subscribe', subscribe]] as const) {
    for (const topic of children(children(children(rules, direction), 'topics'), 'topic')) into.add((topic.textContent ?? '').trim());
  }
  return { publish: [...publish], subscribe: [...subscribe] };
}

/**
 * Permissions that allow exactly the given DDS topic expressions (plus sros2's discovery rule) and deny the
 * rest: what a member's enclave gets when it has no policy (their grant's envelope, or nothing at all).
 */
export function topicPermissions(
  enclavePath: string,
  topics: AllowedTopics,
  params: { notBefore: Date; notAfter: Date; domainId: number },
): string {
  const problem = enclaveNameProblem(enclavePath) ?? domainIdProblem(params.domainId);
  if (problem) throw new RangeError(problem);
  const domains = el('domains', [textEl('id', String(params.domainId))]);
  const list = (names: readonly string[]) => el('topics', names.map((t) => textEl('topic', t)));
  const rules = [];
  if (topics.publish.length || topics.subscribe.length) {
    rules.push(
      el('allow_rule', [
        domains,
        ...(topics.publish.length ? [el('publish', [list(topics.publish)])] : []),
        ...(topics.subscribe.length ? [el('subscribe', [list(topics.subscribe)])] : []),
      ]),
    );
  }
  const discovery = list(['ros_discovery_info']);
  rules.push(el('allow_rule', [domains, el('publish', [discovery]), el('subscribe', [discovery])]));
  const validity = el('validity', [
    textEl('not_before', formatValidityDate(params.notBefore)),
    textEl('not_after', formatValidityDate(params.notAfter)),
  ]);
  return writePermissions([
    el('grant', [textEl('subject_name', `CN=${enclavePath}`), validity, ...rules, textEl('default', 'DENY')], [['name', enclavePath]]),
  ]);
}
