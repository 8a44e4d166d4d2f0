import express, { Router, type Request } from 'express';
import { z } from 'zod';
import { callerOf, type Guards, type TargetOf } from '../acl/guard.js';
import { InvalidInput } from '../errors.js';
import { h } from '../http/handler.js';
import { body, query } from '../http/validate.js';
import { MAX_DOMAIN_ID } from '../policy/names.js';
import { MAX_BATCH, MAX_VALIDITY_DAYS, type EnclavesService } from './enclaves.service.js';
import { IDENTITY_MODES } from './keystores.repo.js';
import type { KeystoresService } from './keystores.service.js';
import type { XmlSandbox } from '../sandbox/sandbox.js';

const GZIP_TYPES = ['application/gzip', 'application/x-gzip', 'application/x-tar+gzip', 'application/octet-stream'];
const XML_TYPES = ['application/xml', 'text/xml', 'text/plain'];

export const CreateKeystore = z
  .object({
    name: z.string(),
    domainId: z.number().int().min(0).max(MAX_DOMAIN_ID).default(0),
    validityDays: z.number().int().min(1).max(36500).default(3650),
    splitCa: z.boolean().default(false),
    caName: z.string().regex(/^[A-Za-z0-9 _.-]{1,64}$/, 'letters, digits, space, "_", "." or "-" (1-64)').optional(),
    enclaveValidityDays: z.number().int().min(1).max(10950).default(365),
    backdateSeconds: z.number().int().min(0).max(30 * 86400).default(3600),
    /** What new enclaves get unless they say: one shared key, or each robot's own key (CSR). */
    identityMode: z.enum(IDENTITY_MODES).default('shared'),
  })
  .strict();

const PolicyFields = {
  policy: z.string().max(1024 * 1024).optional(),
  policyArchive: z.string().max(12 * 1024 * 1024).optional(),
  policyFile: z.string().max(255).optional(),
  validityDays: z.number().int().min(1).max(MAX_VALIDITY_DAYS).optional(),
  /** Absent: the keystore's `identityMode`. */
  identityMode: z.enum(IDENTITY_MODES).optional(),
};
export const PatchEnclave = z.object({ identityMode: z.enum(IDENTITY_MODES) }).strict();
export const CreateEnclave = z.object({ path: z.string().max(300), ...PolicyFields }).strict();
export const BatchCreate = z.object({ paths: z.array(z.string().max(300)).min(1).max(MAX_BATCH), ...PolicyFields }).strict();
export const Rotate = z
  .object({ validityDays: z.number().int().min(1).max(MAX_VALIDITY_DAYS).optional(), revokePrevious: z.boolean().default(false) })
  .strict();
export const ExportQuery = z.object({ private: z.enum(['true', 'false']).default('false') });
export const PolicyQuery = z.object({ file: z.string().max(255).optional() });

/** `{path}` in URLs is the enclave path without its leading slash. */
const enclavePath = (req: Request): string => `/${String((req.params as Record<string, string>)[0] ?? '')}`;

async function policyOf(
  sandbox: XmlSandbox,
  b: { policy?: string; policyArchive?: string; policyFile?: string },
): Promise<string | undefined> {
  if (b.policy !== undefined && b.policyArchive !== undefined) throw new InvalidInput('give policy or policyArchive, not both');
  if (b.policy !== undefined) return sandbox.run('policyXml', { xml: b.policy });
  if (b.policyArchive !== undefined) {
    return sandbox.run('policyArchive', { archive: Buffer.from(b.policyArchive, 'base64'), mainFile: b.policyFile });
  }
  return undefined;
}

/** Enclave paths named in a (not yet validated) creation body: the guard decides before the body is worked on. */
const bodyPaths = (req: Request): string[] => {
  const b = req.body as { path?: unknown; paths?: unknown } | undefined;
  if (typeof b?.path === 'string') return [b.path];
  if (Array.isArray(b?.paths)) return b.paths.filter((p): p is string => typeof p === 'string').slice(0, MAX_BATCH);
  return [];
};
const ksParam = (req: Request) => String((req.params as Record<string, string>).ks ?? (req.params as Record<string, string>)[0]);
const inUrl: TargetOf = (req) => ({ keystore: ksParam(req), enclaves: [enclavePath(req)] });
const inBody: TargetOf = (req) => ({ keystore: ksParam(req), enclaves: bodyPaths(req) });

export function keystoresRoutes(
  keystores: KeystoresService,
  enclaves: EnclavesService,
  guards: Guards,
  maxImportBytes: number,
  sandbox: XmlSandbox,
): Router {
  const r = Router();
  // Bodies are read only after the caller is known to be allowed to send one (an anonymous client must not
  // make the server buffer 64 MB), and never inflated: archives are gzip already, and a Content-Encoding
  // would multiply what the limit lets in.
  const archive = express.raw({ type: GZIP_TYPES, limit: maxImportBytes, inflate: false });
  const policyArchive = express.raw({ type: GZIP_TYPES, limit: '8mb', inflate: false });
  const xml = express.text({ type: XML_TYPES, limit: '1mb', inflate: false });

  r.get('/v1/keystores', guards.user, h(async (req, res) => {
    res.json({ keystores: await keystores.list(callerOf(req)) });
  }));
  r.post('/v1/keystores', guards.admin('keystore:create'), h(async (req, res) => {
    res.status(201).json(await keystores.create(callerOf(req), body(req, CreateKeystore)));
  }));
  r.get('/v1/keystores/:ks', guards.user, h(async (req, res) => {
    res.json(await keystores.get(callerOf(req), req.params.ks!));
  }));
  r.delete('/v1/keystores/:ks', guards.admin('keystore:delete'), h(async (req, res) => {
    await keystores.delete(callerOf(req), req.params.ks!);
    res.status(204).end();
  }));
  r.post('/v1/keystores/:ks/import', guards.admin('keystore:import'), archive, h(async (req, res) => {
    if (!Buffer.isBuffer(req.body) || req.body.length === 0) {
      throw new InvalidInput('send the keystore as a .tar.gz body with Content-Type: application/gzip', undefined, 'invalid-keystore');
    }
    res.status(201).json(await keystores.import(callerOf(req), req.params.ks!, req.body));
  }));
  r.get('/v1/keystores/:ks/export', guards.admin('keystore:export'), h(async (req, res) => {
    const { private: priv } = query(req, ExportQuery);
    const archive = await keystores.export(callerOf(req), req.params.ks!, priv === 'true');
    res
      .type('application/gzip')
      .setHeader('Content-Disposition', `attachment; filename="${req.params.ks}.keystore.tar.gz"`)
      .setHeader('Cache-Control', 'no-store')
      .send(archive);
  }));
  r.put('/v1/keystores/:ks/governance', guards.admin('keystore:governance'), xml, h(async (req, res) => {
    if (typeof req.body !== 'string' || !req.body.trim()) throw new InvalidInput('send governance XML with Content-Type: application/xml', undefined, 'invalid-governance');
    res.json(await keystores.setGovernance(callerOf(req), req.params.ks!, req.body));
  }));

  r.get('/v1/keystores/:ks/enclaves', guards.user, h(async (req, res) => {
    res.json({ enclaves: await enclaves.list(callerOf(req), req.params.ks!) });
  }));
  r.post('/v1/keystores/:ks/enclaves', guards.enclave('manage', inBody), h(async (req, res) => {
    const b = body(req, CreateEnclave);
    // One time limit for the policy, its schema check and the permissions made from it.
    const created = await sandbox.within('xml', async () => {
      const policyXml = await policyOf(sandbox, b);
      return enclaves.create(callerOf(req), req.params.ks!, b.path, { policyXml, validityDays: b.validityDays, identityMode: b.identityMode });
    });
    res.status(201).json(created);
  }));
  r.post(/^\/v1\/keystores\/([^/]+)\/enclaves:batch$/, guards.enclave('manage', inBody), h(async (req, res) => {
    const b = body(req, BatchCreate);
    const created = await sandbox.within('xml', async () => {
      const policyXml = await policyOf(sandbox, b);
      return enclaves.createMany(callerOf(req), ksParam(req), b.paths, { policyXml, validityDays: b.validityDays, identityMode: b.identityMode });
    });
    res.status(201).json({ created: created.length, enclaves: created });
  }));
  r.put('/v1/keystores/:ks/enclaves/*/policy', guards.enclave('manage', inUrl), policyArchive, xml, h(async (req, res) => {
    const updated = await sandbox.within('xml', async () => {
      const policyXml = Buffer.isBuffer(req.body)
        ? await sandbox.run('policyArchive', { archive: req.body, mainFile: query(req, PolicyQuery).file })
        : typeof req.body === 'string' && req.body.trim()
          ? await sandbox.run('policyXml', { xml: req.body })
          : (() => {
              throw new InvalidInput('send the policy as XML (application/xml) or a policy folder as .tar.gz (application/gzip)', undefined, 'invalid-policy');
            })();
      return enclaves.setPolicy(callerOf(req), req.params.ks!, enclavePath(req), policyXml);
    });
    res.json(updated);
  }));
  r.post('/v1/keystores/:ks/enclaves/*/rotate', guards.enclave('manage', inUrl), h(async (req, res) => {
    const { validityDays, revokePrevious } = body(req, Rotate);
    res.json(await enclaves.rotate(callerOf(req), req.params.ks!, enclavePath(req), validityDays, revokePrevious));
  }));
  r.post('/v1/keystores/:ks/enclaves/*/revoke', guards.enclave('manage', inUrl), h(async (req, res) => {
    res.json(await enclaves.revoke(callerOf(req), req.params.ks!, enclavePath(req)));
  }));
  r.patch('/v1/keystores/:ks/enclaves/*', guards.enclave('manage', inUrl), h(async (req, res) => {
    res.json(await enclaves.setIdentityMode(callerOf(req), req.params.ks!, enclavePath(req), body(req, PatchEnclave).identityMode));
  }));
  r.get('/v1/keystores/:ks/enclaves/*', guards.enclave('read', inUrl), h(async (req, res) => {
    res.json(await enclaves.get(callerOf(req), req.params.ks!, enclavePath(req)));
  }));
  r.delete('/v1/keystores/:ks/enclaves/*', guards.enclave('manage', inUrl), h(async (req, res) => {
    await enclaves.delete(callerOf(req), req.params.ks!, enclavePath(req));
    res.status(204).end();
  }));
  return r;
}
