import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { domainIdProblem, enclaveNameProblem, keystoreNameProblem } from '../server/policy/index.js';

describe('enclaveNameProblem', () => {
  const valid = ['/', '/foo', '/foo/bar123/_/baz_', '/_1', '/A/b_C/d9', `/${'a'.repeat(244)}`];
  for (const name of valid) {
    it(`accepts ${JSON.stringify(name.length > 40 ? `${name.slice(0, 20)}…(${name.length})` : name)}`, () => {
      assert.equal(enclaveNameProblem(name), null);
    });
  }

  // [name, a word the message must contain, so a user can tell which rule broke]
  const invalid: Array<[string, RegExp]> = [
    ['', /empty/],
    ['//', /end with '\/'/],
    ['foo', /start with '\/'/],
    ['foo/bar', /start with '\/'/],
    ['/foo/', /end with '\/'/],
    ['/42foo', /segment '42foo'.*digit/],
    ['/foo/42bar', /segment '42bar'.*digit/],
    ['/foo//bar', /'\/\/'/],
    ['/foo-bar', /letters, digits.*"-"/],
    ['/foo bar', /letters, digits/],
    ['/föö', /letters, digits/],
    ['/~/x', /letters, digits/],
    ['/a/../b', /letters, digits/],
    [`/${'a'.repeat(245)}`, /at most 245/],
  ];
  for (const [name, why] of invalid) {
    it(`refuses ${JSON.stringify(name.length > 40 ? `${name.slice(0, 20)}…(${name.length})` : name)}`, () => {
      const problem = enclaveNameProblem(name);
      assert.ok(problem, 'expected a problem');
      assert.match(problem, why);
    });
  }
});

describe('keystoreNameProblem', () => {
  for (const name of ['a', 'fleet', 'Fleet-2.prod_eu', `k${'x'.repeat(63)}`]) {
    it(`accepts ${JSON.stringify(name)}`, () => assert.equal(keystoreNameProblem(name), null));
  }
  const invalid: Array<[string, RegExp]> = [
    ['', /empty/],
    ['.', /start with a letter/],
    ['..', /start with a letter/],
    ['.hidden', /start with a letter/],
    ['-rf', /start with a letter/],
    ['1fleet', /start with a letter/],
    ['a/b', /letters, digits/],
    ['a\\b', /letters, digits/],
    ['a b', /letters, digits/],
    ['a;rm', /letters, digits/],
    [`k${'x'.repeat(64)}`, /at most 64/],
  ];
  for (const [name, why] of invalid) {
    it(`refuses ${JSON.stringify(name.slice(0, 20))}`, () => {
      const problem = keystoreNameProblem(name);
      assert.ok(problem, 'expected a problem');
      assert.match(problem, why);
    });
  }
});

describe('domainIdProblem', () => {
  for (const id of [0, 1, 101, 232]) it(`accepts ${id}`, () => assert.equal(domainIdProblem(id), null));
  for (const id of [-1, 233, 1.5, Number.NaN]) it(`refuses ${id}`, () => assert.ok(domainIdProblem(id)));
});
