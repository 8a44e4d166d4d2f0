/**
 * Permissions envelopes: what a grant lets its holder sign into an enclave's permissions. Pure functions over
 * DDS topic names as they appear in permissions.xml (after sros2's mangling: `rt/…`, `rq/…Request`,
 * `rr/…Reply`), so topics, services and actions are all bounded the same way.
 *
 * An envelope pattern is an exact topic name (`rt/rosout`) or a prefix ending in `/**` (`rt/acme/**`:
 * everything under `rt/acme/`). A topic in a permissions file may itself be a DDS glob (`rt/acme/*`,
 * fnmatch without FNM_PATHNAME, so `*` also matches `/`): it is inside the envelope only when every name it
 * can match is, i.e. when its literal part before the first glob character lies under a `/**` prefix.
 */

export interface PermissionsEnvelope {
  publish: readonly string[];
  subscribe: readonly string[];
}

/** The topics a permissions file allows, per direction (deny rules only take away, so they are not listed). */
export interface AllowedTopics {
  publish: readonly string[];
  subscribe: readonly string[];
}

/** sros2 adds this rule to every enclave (rmw needs it for graph discovery); no envelope has to name it. */
export const ALWAYS_ALLOWED_TOPICS: readonly string[] = ['ros_discovery_info'];

const TOPIC = /^[A-Za-z0-9_]+(\/[A-Za-z0-9_]+)*$/;
const GLOB_CHARS = /[*?[\]\\]/;

/** Returns a problem, or null when the pattern is valid; checked when a grant is written. */
export function envelopePatternProblem(pattern: string): string | null {
  const literal = pattern.endsWith('/**') ? pattern.slice(0, -3) : pattern;
  if (!TOPIC.test(literal)) {
    return `"${pattern}" is not a DDS topic name (letters, digits, "_" and "/", e.g. rt/acme/camera) optionally ending in "/**"`;
  }
  return null;
}

/** Whether every topic name `topic` (possibly a DDS glob) can match lies inside `pattern`. */
export function topicWithin(topic: string, pattern: string): boolean {
  const glob = GLOB_CHARS.exec(topic);
  if (pattern.endsWith('/**')) {
    const prefix = pattern.slice(0, -2); // keeps the '/': 'rt/a/**' does not cover 'rt/ab'
    const literal = glob ? topic.slice(0, glob.index) : topic;
    return literal.startsWith(prefix) && (glob !== null || literal.length > prefix.length);
  }
  return glob === null && topic === pattern;
}

/** The allowed topics that fall outside the envelope, per direction (empty lists: all inside). */
export function outsideEnvelope(topics: AllowedTopics, envelope: PermissionsEnvelope): AllowedTopics {
  const outside = (list: readonly string[], patterns: readonly string[]) =>
    list.filter((t) => !ALWAYS_ALLOWED_TOPICS.includes(t) && !patterns.some((p) => topicWithin(t, p)));
  return { publish: outside(topics.publish, envelope.publish), subscribe: outside(topics.subscribe, envelope.subscribe) };
}

export function withinEnvelope(topics: AllowedTopics, envelope: PermissionsEnvelope): boolean {
  const o = outsideEnvelope(topics, envelope);
  return o.publish.length === 0 && o.subscribe.length === 0;
}

/** The envelope as DDS topic expressions for a permissions file: `rt/acme/**` becomes the glob `rt/acme/*`. */
export function envelopeAsTopics(patterns: readonly string[]): string[] {
  return patterns.map((p) => (p.endsWith('/**') ? `${p.slice(0, -2)}*` : p));
}
