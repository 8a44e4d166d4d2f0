import type { Request } from 'express';
import { z, type ZodTypeAny } from 'zod';

/** Parses input with a schema; a violation is a ZodError, which the error handler turns into a 422. */
export function parse<S extends ZodTypeAny>(schema: S, value: unknown): z.infer<S> {
  return schema.parse(value) as z.infer<S>;
}

export const body = <S extends ZodTypeAny>(req: { body?: unknown }, schema: S): z.infer<S> => parse(schema, req.body ?? {});
export const query = <S extends ZodTypeAny>(req: Request, schema: S): z.infer<S> => parse(schema, req.query);

/** Label maps (robot labels, selectors): Kubernetes-like keys and values. */
export const labelsSchema = z.record(
  z.string().regex(/^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$/, 'invalid label key'),
  z.string().regex(/^[A-Za-z0-9._-]{0,63}$/, 'invalid label value'),
);
