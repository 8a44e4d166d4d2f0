/**
 * A JSON Schema (2020-12) validator for the keywords the OpenAPI document uses, and no more: a keyword it
 * does not know is an error, never silently ignored, so a schema cannot pass by being misunderstood.
 * (No JSON Schema package is installed; the subset is small.)
 */
type Schema = { [k: string]: unknown } | boolean;

const ANNOTATIONS = new Set(['description', 'default', 'title', 'contentMediaType']);
const DATE_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/;

const typeOf = (v: unknown): string =>
  v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v === 'number' ? (Number.isInteger(v) ? 'integer' : 'number') : typeof v;

export function validate(schema: Schema, value: unknown, resolve: (ref: string) => Schema, at = '$'): string[] {
  if (schema === true) return [];
  if (schema === false) return [`${at}: not allowed`];
  const errors: string[] = [];
  const s = schema;
  for (const [k, want] of Object.entries(s)) {
    switch (k) {
      case '$ref':
        errors.push(...validate(resolve(want as string), value, resolve, at));
        break;
      case 'type': {
        const types = Array.isArray(want) ? (want as string[]) : [want as string];
        const t = typeOf(value);
        if (!types.includes(t) && !(t === 'integer' && types.includes('number'))) errors.push(`${at}: ${t}, expected ${types.join('|')}`);
        break;
      }
      case 'enum':
        if (!(want as unknown[]).includes(value)) errors.push(`${at}: ${JSON.stringify(value)} not in ${JSON.stringify(want)}`);
        break;
      case 'const':
        if (value !== want) errors.push(`${at}: ${JSON.stringify(value)} is not ${JSON.stringify(want)}`);
        break;
      case 'format':
        if (want !== 'date-time') throw new Error(`${at}: unknown format ${String(want)}`);
        if (typeof value === 'string' && (!DATE_TIME.test(value) || Number.isNaN(Date.parse(value)))) errors.push(`${at}: ${value} is not a date-time`);
        break;
      case 'pattern':
        if (typeof value === 'string' && !new RegExp(want as string, 'u').test(value)) errors.push(`${at}: does not match ${String(want)}`);
        break;
      case 'minLength':
        if (typeof value === 'string' && [...value].length < (want as number)) errors.push(`${at}: shorter than ${String(want)}`);
        break;
      case 'maxLength':
        if (typeof value === 'string' && [...value].length > (want as number)) errors.push(`${at}: longer than ${String(want)}`);
        break;
      case 'minimum':
        if (typeof value === 'number' && value < (want as number)) errors.push(`${at}: below ${String(want)}`);
        break;
      case 'maximum':
        if (typeof value === 'number' && value > (want as number)) errors.push(`${at}: above ${String(want)}`);
        break;
      case 'minItems':
        if (Array.isArray(value) && value.length < (want as number)) errors.push(`${at}: fewer than ${String(want)} items`);
        break;
      case 'maxItems':
        if (Array.isArray(value) && value.length > (want as number)) errors.push(`${at}: more than ${String(want)} items`);
        break;
      case 'items':
        if (Array.isArray(value)) value.forEach((v, i) => errors.push(...validate(want as Schema, v, resolve, `${at}[${i}]`)));
        break;
      case 'required':
        if (typeOf(value) === 'object') {
          for (const key of want as string[]) if (!(key in (value as object))) errors.push(`${at}: missing ${key}`);
        }
        break;
      case 'properties':
        if (typeOf(value) === 'object') {
          for (const [key, sub] of Object.entries(want as Record<string, Schema>)) {
            if (key in (value as object)) errors.push(...validate(sub, (value as Record<string, unknown>)[key], resolve, `${at}.${key}`));
          }
        }
        break;
      case 'additionalProperties':
        if (typeOf(value) === 'object') {
          const known = new Set(Object.keys((s.properties as object | undefined) ?? {}));
          for (const [key, v] of Object.entries(value as Record<string, unknown>)) {
            if (!known.has(key)) errors.push(...validate(want as Schema, v, resolve, `${at}.${key}`));
          }
        }
        break;
      case 'propertyNames':
        if (typeOf(value) === 'object') for (const key of Object.keys(value as object)) errors.push(...validate(want as Schema, key, resolve, `${at}{${key}}`));
        break;
      case 'anyOf': {
        const results = (want as Schema[]).map((sub) => validate(sub, value, resolve, at));
        if (!results.some((r) => r.length === 0)) errors.push(`${at}: matches none of anyOf (${results.map((r) => r.join('; ')).join(' | ')})`);
        break;
      }
      default:
        if (!ANNOTATIONS.has(k)) throw new Error(`${at}: the validator does not know the keyword "${k}"`);
    }
  }
  return errors;
}
