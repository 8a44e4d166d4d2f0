import express, { Router, type Request, type RequestHandler } from 'express';
import { z } from 'zod';
import { adminOf, userOf } from '../auth/principal.js';
import { InvalidInput } from '../errors.js';
import { h } from '../http/handler.js';
import { body, query } from '../http/validate.js';
import type { EnclavesService } from './enclaves.service.js';
import type { KeystoresService } from './keystores.service.js';
import { policyFromArchive, policyFromXml } from './policy-input.js';

const GZIP_TYPES = ['application/gzip', 'application/x-gzip', 'application/x-tar+gzip', 'application/octet-stream'];
const XML_TYPES = ['application/xml', 'text/xml', 'text/plain'];

const CreateKeystore = z
  .object({
    name: z.string(),
    domainId: z.number().int().default(0),
    validityDays: z.number().int().min(1).max(36500).default(3650),
    splitCa: z.boolean().default(false),
    caName: z.string().regex(/^[A-Za-z0-9 _.-]{1,64}$/, 'letters, digits, space, "_", "." or "-" (1-64)').optional(),
    enclaveValidityDays: z.number().int().min(1).max(10950).default(365),
    backdateSeconds: z.number().int().min(0).max(30 * 86400).default(3600),
  })
  .strict();

const PolicyFields = {
  policy: z.string().max(1024 * 1024).optional(),
  policyArchive: z.string().max(12 * 1024 * 1024).optional(),
  policyFile: z.string().max(255).optional(),
  validityDays: z.number().int().min(1).optional(),
};
const CreateEnclave = z.object({ path: z.string().max(300), ...PolicyFields }).strict();
const BatchCreate = z.object({ paths: z.array(z.string().max(300)).min(1), ...PolicyFields }).strict();
const Rotate = z.object({ validityDays: z.number().int().min(1).optional(), revokePrevious: z.boolean().default(false) }).strict();
const ExportQuery = z.object({ private: z.enum(['true', 'false']).default('false') });
const PolicyQuery = z.object({ file: z.string().max(255).optional() });

/** `{path}` in URLs is the enclave path without its leading slash. */
const enclavePath = (req: Request): string => `/${String((req.params as Record<string, string>)[0] ?? '')}`;

async function policyOf(b: { policy?: string; policyArchive?: string; policyFile?: string }): Promise<string | undefined> {
  if (b.policy !== undefined && b.policyArchive !== undefined) throw new InvalidInput('give policy or policyArchive, not both');
  if (b.policy !== undefined) return policyFromXml(b.policy);
  if (b.policyArchive !== undefined) return policyFromArchive(Buffer.from(b.policyArchive, 'base64'), b.policyFile);
  return undefined;
}

export function keystoresRoutes(keystores: KeystoresService, enclaves: EnclavesService, maxImportBytes: number): Router {
  const r = Router();
  // Bodies are read only after the caller is known to be allowed to send one (an anonymous client must not
  // make the server buffer 64 MB), and never inflated: archives are gzip already, and a Content-Encoding
  // would multiply what the limit lets in.
  const archive = express.raw({ type: GZIP_TYPES, limit: maxImportBytes, inflate: false });
  const policyArchive = express.raw({ type: GZIP_TYPES, limit: '8mb', inflate: false });
  const xml = express.text({ type: XML_TYPES, limit: '1mb', inflate: false });
  const user: RequestHandler = (req, _res, next) => {
    userOf(req);
    next();
  };
  const admin: RequestHandler = (req, _res, next) => {
    adminOf(req);
    next();
  };

  r.get('/v1/keystores', h((req, res) => {
    res.json({ keystores: keystores.list(userOf(req)) });
  }));
  r.post('/v1/keystores', h(async (req, res) => {
    res.status(201).json(await keystores.create(userOf(req), body(req, CreateKeystore)));
  }));
  r.get('/v1/keystores/:ks', h((req, res) => {
    res.json(keystores.get(userOf(req), req.params.ks!));
  }));
  r.delete('/v1/keystores/:ks', h((req, res) => {
    keystores.delete(userOf(req), req.params.ks!);
    res.status(204).end();
  }));
  r.post('/v1/keystores/:ks/import', admin, archive, h(async (req, res) => {
    const user = userOf(req);
    if (!Buffer.isBuffer(req.body) || req.body.length === 0) {
      throw new InvalidInput('send the keystore as a .tar.gz body with Content-Type: application/gzip', undefined, 'invalid-keystore');
    }
    res.status(201).json(await keystores.import(user, req.params.ks!, req.body));
  }));
  r.get('/v1/keystores/:ks/export', h(async (req, res) => {
    const user = userOf(req);
    const { private: priv } = query(req, ExportQuery);
    const archive = await keystores.export(user, req.params.ks!, priv === 'true');
    res
      .type('application/gzip')
      .setHeader('Content-Disposition', `attachment; filename="${req.params.ks}.keystore.tar.gz"`)
      .setHeader('Cache-Control', 'no-store')
      .send(archive);
  }));
  r.put('/v1/keystores/:ks/governance', admin, xml, h(async (req, res) => {
    const user = userOf(req);
    if (typeof req.body !== 'string' || !req.body.trim()) throw new InvalidInput('send governance XML with Content-Type: application/xml', undefined, 'invalid-governance');
    res.json(await keystores.setGovernance(user, req.params.ks!, req.body));
  }));

  r.get('/v1/keystores/:ks/enclaves', h((req, res) => {
    res.json({ enclaves: enclaves.list(userOf(req), req.params.ks!) });
  }));
  r.post('/v1/keystores/:ks/enclaves', h(async (req, res) => {
    const user = userOf(req);
    const b = body(req, CreateEnclave);
    enclaves.requireManage(user, req.params.ks!, [b.path]);
    const policyXml = await policyOf(b);
    res.status(201).json(await enclaves.create(user, req.params.ks!, b.path, { policyXml, validityDays: b.validityDays }));
  }));
  r.post(/^\/v1\/keystores\/([^/]+)\/enclaves:batch$/, h(async (req, res) => {
    const user = userOf(req);
    const b = body(req, BatchCreate);
    // Express has decoded the parameter already.
    const ks = String((req.params as Record<string, string>)[0]);
    enclaves.requireManage(user, ks, b.paths);
    const policyXml = await policyOf(b);
    const created = await enclaves.createMany(user, ks, b.paths, { policyXml, validityDays: b.validityDays });
    res.status(201).json({ created: created.length, enclaves: created });
  }));
  r.put('/v1/keystores/:ks/enclaves/*/policy', user, policyArchive, xml, h(async (req, res) => {
    const user = userOf(req);
    enclaves.requireManage(user, req.params.ks!, [enclavePath(req)]);
    const policyXml = Buffer.isBuffer(req.body)
      ? await policyFromArchive(req.body, query(req, PolicyQuery).file)
      : typeof req.body === 'string' && req.body.trim()
        ? policyFromXml(req.body)
        : (() => {
            throw new InvalidInput('send the policy as XML (application/xml) or a policy folder as .tar.gz (application/gzip)', undefined, 'invalid-policy');
          })();
    res.json(await enclaves.setPolicy(user, req.params.ks!, enclavePath(req), policyXml));
  }));
  r.post('/v1/keystores/:ks/enclaves/*/rotate', h((req, res) => {
    const user = userOf(req);
    const { validityDays, revokePrevious } = body(req, Rotate);
    res.json(enclaves.rotate(user, req.params.ks!, enclavePath(req), validityDays, revokePrevious));
  }));
  r.post('/v1/keystores/:ks/enclaves/*/revoke', h((req, res) => {
    res.json(enclaves.revoke(userOf(req), req.params.ks!, enclavePath(req)));
  }));
  r.get('/v1/keystores/:ks/enclaves/*', h((req, res) => {
    res.json(enclaves.get(userOf(req), req.params.ks!, enclavePath(req)));
  }));
  r.delete('/v1/keystores/:ks/enclaves/*', h((req, res) => {
    enclaves.delete(userOf(req), req.params.ks!, enclavePath(req));
    res.status(204).end();
  }));
  return r;
}
