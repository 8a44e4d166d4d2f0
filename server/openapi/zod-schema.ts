import { z, type ZodTypeAny } from 'zod';

/** A JSON Schema (draft 2020-12, OpenAPI 3.1's dialect) as plain data. */
export type JsonSchema = { [keyword: string]: unknown };

/**
 * zod 3 → JSON Schema for the subset the routes' input schemas use. Refinements and transforms cannot be
 * said in JSON Schema: the input shape is described and the rule stays in zod (a violation is a 422 either
 * way). A zod type not known here is described as "any value" and named in `gaps`, so the OpenAPI test can
 * refuse it without a new schema kind ever stopping the server from starting.
 */
export function toJsonSchema(schema: ZodTypeAny, gaps: string[] = [], where = '(schema)'): JsonSchema {
  const def = schema._def as { typeName: string; description?: string };
  const out = convert(schema, gaps, where);
  if (def.description) out.description = def.description;
  return out;
}

function convert(schema: ZodTypeAny, gaps: string[], where: string): JsonSchema {
  if (schema instanceof z.ZodString) {
    const out: JsonSchema = { type: 'string' };
    for (const c of schema._def.checks) {
      if (c.kind === 'min') out.minLength = c.value;
      else if (c.kind === 'max') out.maxLength = c.value;
      else if (c.kind === 'regex') out.pattern = c.regex.source;
      else gaps.push(`${where}: string check ${c.kind}`);
    }
    return out;
  }
  if (schema instanceof z.ZodNumber) {
    const out: JsonSchema = { type: 'number' };
    for (const c of schema._def.checks) {
      if (c.kind === 'int') out.type = 'integer';
      else if (c.kind === 'min') out[c.inclusive ? 'minimum' : 'exclusiveMinimum'] = c.value;
      else if (c.kind === 'max') out[c.inclusive ? 'maximum' : 'exclusiveMaximum'] = c.value;
      else gaps.push(`${where}: number check ${c.kind}`);
    }
    return out;
  }
  if (schema instanceof z.ZodBoolean) return { type: 'boolean' };
  if (schema instanceof z.ZodEnum) return { type: 'string', enum: [...(schema.options as string[])] };
  if (schema instanceof z.ZodArray) {
    const out: JsonSchema = { type: 'array', items: toJsonSchema(schema.element, gaps, `${where}[]`) };
    if (schema._def.minLength) out.minItems = schema._def.minLength.value;
    if (schema._def.maxLength) out.maxItems = schema._def.maxLength.value;
    return out;
  }
  if (schema instanceof z.ZodRecord) {
    return {
      type: 'object',
      propertyNames: toJsonSchema(schema.keySchema, gaps, `${where}{key}`),
      additionalProperties: toJsonSchema(schema.valueSchema, gaps, `${where}{}`),
    };
  }
  if (schema instanceof z.ZodObject) {
    const properties: Record<string, JsonSchema> = {};
    const required: string[] = [];
    for (const [key, value] of Object.entries(schema.shape as Record<string, ZodTypeAny>)) {
      properties[key] = toJsonSchema(value, gaps, `${where}.${key}`);
      if (!value.isOptional()) required.push(key);
    }
    const out: JsonSchema = { type: 'object', properties };
    if (required.length) out.required = required;
    // strip (zod's default) drops unknown keys silently, passthrough keeps them: both accept them.
    if (schema._def.unknownKeys === 'strict') out.additionalProperties = false;
    return out;
  }
  if (schema instanceof z.ZodOptional) return toJsonSchema(schema.unwrap(), gaps, where);
  if (schema instanceof z.ZodDefault) return { ...toJsonSchema(schema.removeDefault(), gaps, where), default: schema._def.defaultValue() };
  if (schema instanceof z.ZodNullable) return { anyOf: [toJsonSchema(schema.unwrap(), gaps, where), { type: 'null' }] };
  if (schema instanceof z.ZodEffects) return toJsonSchema(schema.innerType(), gaps, where);
  gaps.push(`${where}: ${(schema._def as { typeName: string }).typeName}`);
  return {};
}

