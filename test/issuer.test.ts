import { test } from 'node:test';
import assert from 'node:assert/strict';
import { defaultPermissionsFast, enclaveValidity, withValidity } from '../server/keystores/issuer.js';
import { defaultPermissions } from '../server/policy/permissions.js';

test('the cached allow-all permissions equal the transform output, byte for byte', () => {
  const cases: [string, Date, Date, number][] = [
    ['/a', new Date('2026-01-02T03:04:05Z'), new Date('2027-01-02T03:04:05Z'), 0],
    ['/fleet/amr_07/driver', new Date('2030-12-31T23:59:59Z'), new Date('2031-06-01T00:00:00Z'), 42],
    ['/_/x1', new Date('2026-11-27T00:00:00Z'), new Date('2026-11-28T00:00:00Z'), 232],
  ];
  for (const [path, nb, na, domain] of cases) {
    assert.equal(defaultPermissionsFast(path, { notBefore: nb, notAfter: na }, domain), defaultPermissions(path, nb, na, domain));
  }
});

test('enclave validity is back-dated and never outlives the CA', () => {
  const now = new Date('2026-11-27T12:00:00.750Z');
  const v = enclaveValidity(now, 365, 3600, new Date('2036-01-01T00:00:00Z'));
  assert.equal(v.notBefore.toISOString(), '2026-11-27T11:00:00.000Z');
  assert.equal(v.notAfter.toISOString(), '2027-11-27T12:00:00.000Z');
  const capped = enclaveValidity(now, 3650, 3600, new Date('2027-01-01T00:00:00Z'));
  assert.equal(capped.notAfter.toISOString(), '2027-01-01T00:00:00.000Z');
});

test('withValidity changes only the validity of every grant', () => {
  const xml = defaultPermissions('/a', new Date('2026-01-01T00:00:00Z'), new Date('2027-01-01T00:00:00Z'), 0);
  const out = withValidity(xml, { notBefore: new Date('2030-01-01T00:00:00Z'), notAfter: new Date('2031-01-01T00:00:00Z') });
  assert.match(out, /<not_before>2030-01-01T00:00:00<\/not_before>/);
  assert.match(out, /<not_after>2031-01-01T00:00:00<\/not_after>/);
  assert.equal(out.replace(/<validity>[\s\S]*?<\/validity>/, ''), xml.replace(/<validity>[\s\S]*?<\/validity>/, ''));
});
