import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { DOMParser, XMLSerializer } from '@xmldom/xmldom';
import {
  PolicyError,
  canonicalXml,
  fsPolicyReader,
  loadPolicy,
  mapPolicyReader,
  resolveXIncludes,
} from '../server/policy/index.js';
import { FIXTURES } from './helpers/tools.js';

const POLICIES = `${FIXTURES}/policies`;
const XI = 'xmlns:xi="http://www.w3.org/2001/XInclude"';

const fixturePolicies = readdirSync(POLICIES).filter((f) => f.endsWith('.policy.xml')).sort();

/**
 * A tree exercising libxml2's xml:base rules: includes from sub- and parent folders, a nested include,
 * a same-folder include (no xml:base), an element with its own xml:base, a whole-document include,
 * and the 2003 namespace.
 */
const tree: Record<string, string> = {
  'main.xml': `<r ${XI}>
<xi:include href="a/one.xml" xpointer="xpointer(/p/*)"/>
<xi:include href="a/b/../two.xml"/>
<xi:include href="same.xml" xpointer="xpointer(/p/*)"/>
</r>`,
  'a/one.xml': `<p xmlns:xi="http://www.w3.org/2003/XInclude"><x1/><xi:include href="b/deep.xml" xpointer="xpointer(/p/*)"/><xi:include href="../c/up.xml" xpointer="xpointer(/p/*)"/><xi:include href="sib.xml" xpointer="xpointer(/p/*)"/><x2 xml:base="zz/q.xml"/></p>`,
  'a/b/deep.xml': '<p><deep/><deep2/></p>',
  'c/up.xml': '<p><up/></p>',
  'a/sib.xml': '<p><sib/></p>',
  'a/two.xml': `<p ${XI}><two><xi:include href="b/deep.xml" xpointer="xpointer(/p/*)"/></two></p>`,
  'same.xml': `<p ${XI}><s/><xi:include href="a/sib.xml" xpointer="xpointer(/p/*)"/></p>`,
};

/** `xmllint --xinclude main.xml` (libxml2 2.9.14) on `tree`. */
const treeByLibxml2 = `<r ${XI}>
<x1 xml:base="a/one.xml"/><deep xml:base="a/b/deep.xml"/><deep2 xml:base="a/b/deep.xml"/><up xml:base="c/up.xml"/><sib xml:base="a/one.xml"/><x2 xml:base="a/zz/q.xml"/>
<p ${XI} xml:base="a/two.xml"><two><deep xml:base="b/deep.xml"/><deep2 xml:base="b/deep.xml"/></two></p>
<s/><sib xml:base="a/sib.xml"/>
</r>`;

const temps: string[] = [];
after(() => {
  for (const dir of temps) rmSync(dir, { recursive: true, force: true });
});
function writeTree(files: Record<string, string>): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'policy-xi-'));
  temps.push(dir);
  for (const [rel, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    writeFileSync(path.join(dir, rel), text);
  }
  return dir;
}

function expectPolicyError(fn: () => unknown, message: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof PolicyError, `expected a PolicyError, got ${String(err)}`);
    assert.match(err.message, message);
    return true;
  });
}

describe('XInclude on the sros2 fixture policies', () => {
  it('sample.policy.xml pulls in the other policies and common/', () => {
    const { xml, files } = loadPolicy('sample.policy.xml', fsPolicyReader(POLICIES));
    assert.deepEqual(files, [
      'sample.policy.xml',
      'talker_listener.policy.xml',
      'common/node.xml',
      'common/node/logging.xml',
      'common/node/time.xml',
      'common/node/parameters.xml',
      'add_two_ints.policy.xml',
      'minimal_action.policy.xml',
    ]);
    assert.doesNotMatch(xml, /xi:include/);
    const paths = [...xml.matchAll(/<enclave [^>]*path="([^"]+)"/g)].map((m) => m[1]);
    assert.deepEqual(paths, [
      '/talker_listener/talker',
      '/talker_listener/listener',
      '/add_two_ints/add_two_ints_server',
      '/add_two_ints/add_two_ints_client',
      '/minimal_action/minimal_action_server',
      '/minimal_action/minimal_action_client',
      '/sample_policy/admin',
    ]);
    // libxml2 marks what came from another folder; policy.xsd allows xml:base for exactly this.
    assert.match(xml, /<topics publish="ALLOW" xml:base="common\/node\/logging.xml">/);
  });

  it('matches the expected xml:base placement on a tree with nested, sibling and parent-folder includes', () => {
    const { xml } = loadPolicy('main.xml', mapPolicyReader(tree));
    assert.equal(canonicalXml(xml), canonicalXml(treeByLibxml2));
  });

  const xmllint = spawnSync('xmllint', ['--version']);
  const haveXmllint = !xmllint.error && xmllint.status === 0;
  describe('equals libxml2 (xmllint --xinclude), when xmllint is installed', { skip: !haveXmllint && 'xmllint not installed' }, () => {
    for (const file of [...fixturePolicies, 'common/lifecycle_node.xml']) {
      it(file, () => {
        const ours = loadPolicy(file, fsPolicyReader(POLICIES)).xml;
        const theirs = execFileSync('xmllint', ['--xinclude', file], { cwd: POLICIES, encoding: 'utf8' });
        assert.equal(canonicalXml(ours), canonicalXml(theirs));
      });
    }
    it('the xml:base tree', () => {
      const dir = writeTree(tree);
      const theirs = execFileSync('xmllint', ['--xinclude', 'main.xml'], { cwd: dir, encoding: 'utf8' });
      assert.equal(canonicalXml(loadPolicy('main.xml', fsPolicyReader(dir)).xml), canonicalXml(theirs));
    });
  });
});

describe('XInclude sources', () => {
  it('resolves a Document in place, hrefs relative to baseFile', () => {
    const doc = new DOMParser().parseFromString(`<r ${XI}><xi:include href="../x.xml"/></r>`, 'text/xml');
    resolveXIncludes(doc, { baseFile: 'sub/main.xml', readFile: mapPolicyReader({ 'x.xml': '<x/>' }) });
    assert.equal(new XMLSerializer().serializeToString(doc), `<r ${XI}><x xml:base="../x.xml"/></r>`);
  });

  it('reads an in-memory archive: bytes, "./" prefixes, a BOM', () => {
    const files = new Map<string, string | Uint8Array>([
      ['./policy/main.xml', new TextEncoder().encode(`\uFEFF<r ${XI}><xi:include href="inc/a.xml"/></r>`)],
      ['policy/inc/a.xml', '<a>é</a>'],
    ]);
    const { xml, files: used } = loadPolicy('policy/main.xml', mapPolicyReader(files));
    assert.equal(canonicalXml(xml), canonicalXml(`<r><a xml:base="inc/a.xml">é</a></r>`));
    assert.deepEqual(used, ['policy/main.xml', 'policy/inc/a.xml']);
  });

  it('refuses bytes that are not UTF-8', () => {
    const reader = mapPolicyReader({ 'main.xml': new Uint8Array([0x3c, 0x72, 0xff, 0x2f, 0x3e]) });
    expectPolicyError(() => loadPolicy('main.xml', reader), /main\.xml: is not UTF-8/);
  });

  it('does not follow a symbolic link out of the policy folder, nor name disk paths', () => {
    const outside = writeTree({ 'secret.xml': '<secret/>' });
    const dir = writeTree({ 'main.xml': `<r ${XI}><xi:include href="link.xml"/></r>` });
    symlinkSync(path.join(outside, 'secret.xml'), path.join(dir, 'link.xml'));
    assert.throws(
      () => loadPolicy('main.xml', fsPolicyReader(dir)),
      (err: unknown) => err instanceof PolicyError && /link\.xml.*outside/.test(err.message) && !err.message.includes(tmpdir()),
    );
  });

  it('follows a symbolic link that stays inside', () => {
    const dir = writeTree({ 'main.xml': `<r ${XI}><xi:include href="l.xml"/></r>`, 'real/x.xml': '<x/>' });
    symlinkSync(path.join(dir, 'real/x.xml'), path.join(dir, 'l.xml'));
    assert.equal(canonicalXml(loadPolicy('main.xml', fsPolicyReader(dir)).xml), canonicalXml('<r><x/></r>'));
  });
});

describe('XInclude refusals', () => {
  const main = (include: string, extra: Record<string, string> = {}) =>
    mapPolicyReader({ 'main.xml': `<r ${XI}>${include}</r>`, ...extra });
  // [what, include element, extra files, expected message]
  const cases: Array<[string, string, Record<string, string>, RegExp]> = [
    ['an absolute path', '<xi:include href="/etc/passwd"/>', {}, /main\.xml: xi:include of "\/etc\/passwd": absolute paths and URLs/],
    ['a file: URL', '<xi:include href="file:///etc/passwd"/>', {}, /absolute paths and URLs/],
    ['an http URL', '<xi:include href="http://example.com/p.xml"/>', {}, /absolute paths and URLs/],
    ['a Windows path', '<xi:include href="C:\\p.xml"/>', {}, /absolute paths and URLs/],
    ['climbing out with ..', '<xi:include href="../outside.xml"/>', {}, /outside the policy folder/],
    ['climbing out further down', '<xi:include href="a/../../outside.xml"/>', {}, /outside the policy folder/],
    ['climbing out percent-encoded', '<xi:include href="%2e%2e/outside.xml"/>', {}, /outside the policy folder/],
    ['a backslash', '<xi:include href="a\\b.xml"/>', {}, /'\/'/],
    ['a fragment', '<xi:include href="x.xml#foo"/>', { 'x.xml': '<x/>' }, /fragment/],
    ['no href', '<xi:include xpointer="xpointer(/r/*)"/>', {}, /href is required/],
    ['parse="text"', '<xi:include href="x.xml" parse="text"/>', { 'x.xml': '<x/>' }, /parse="text" is not supported/],
    ['a missing file', '<xi:include href="sub/missing.xml"/>', {}, /main\.xml: xi:include of "sub\/missing\.xml": file sub\/missing\.xml not found/],
    ['including itself', '<xi:include href="main.xml"/>', {}, /include cycle: main\.xml -> main\.xml/],
    ['a cycle', '<xi:include href="b.xml"/>', { 'b.xml': `<b ${XI}><xi:include href="main.xml"/></b>` }, /include cycle: main\.xml -> b\.xml -> main\.xml/],
    ['an unsupported xpointer', '<xi:include href="x.xml" xpointer="element(/1/2)"/>', { 'x.xml': '<x/>' }, /xpointer "element\(\/1\/2\)" is not supported/],
    ['an xpointer with a predicate', '<xi:include href="x.xml" xpointer="xpointer(/x/y[1])"/>', { 'x.xml': '<x/>' }, /not supported/],
    ['an xpointer selecting nothing', '<xi:include href="x.xml" xpointer="xpointer(/profile/*)"/>', { 'x.xml': '<x><y/></x>' }, /selects nothing in x\.xml/],
    ['a broken included file', '<xi:include href="c/bad.xml"/>', { 'c/bad.xml': '<a><b></a>' }, /c\/bad\.xml: not well-formed XML: line 1/],
    ['a DOCTYPE', '<xi:include href="d.xml"/>', { 'd.xml': '<!DOCTYPE d [<!ENTITY e "x">]><d/>' }, /d\.xml: a DOCTYPE is not allowed/],
    ['a hand-written xml:base', '<g xml:base="elsewhere/"><xi:include href="x.xml"/></g>', { 'x.xml': '<x/>' }, /xml:base on or around an xi:include/],
    [
      'a missing file deeper down, named where it is included',
      '<xi:include href="a/x.xml"/>',
      { 'a/x.xml': `<x ${XI}><xi:include href="y.xml"/></x>` },
      /a\/x\.xml: xi:include of "y\.xml": file a\/y\.xml not found/,
    ],
  ];
  for (const [what, include, extra, message] of cases) {
    it(`refuses ${what}`, () => expectPolicyError(() => loadPolicy('main.xml', main(include, extra)), message));
  }

  it('uses xi:fallback when the file is missing', () => {
    const reader = main('<xi:include href="missing.xml"><xi:fallback><alt/></xi:fallback></xi:include>');
    assert.equal(canonicalXml(loadPolicy('main.xml', reader).xml), canonicalXml('<r><alt/></r>'));
  });

  it('stops an include tree that grows exponentially', () => {
    const files: Record<string, string> = { 'f6.xml': '<leaf/>' };
    for (let i = 0; i < 6; i++) files[`f${i}.xml`] = `<n ${XI}>${`<xi:include href="f${i + 1}.xml"/>`.repeat(10)}</n>`;
    expectPolicyError(() => loadPolicy('f0.xml', mapPolicyReader(files)), /more than 100000 elements/);
  });

  it('stops a chain of includes deeper than the limit', () => {
    const files: Record<string, string> = { 'f40.xml': '<leaf/>' };
    for (let i = 0; i < 40; i++) files[`f${i}.xml`] = `<n ${XI}><xi:include href="f${i + 1}.xml"/></n>`;
    expectPolicyError(() => loadPolicy('f0.xml', mapPolicyReader(files)), /nested more than 32 deep/);
    assert.doesNotThrow(() => loadPolicy('f0.xml', mapPolicyReader(files), { maxDepth: 50 }));
  });

  it('reports a missing main file', () => {
    expectPolicyError(() => loadPolicy('nope.xml', mapPolicyReader({})), /nope\.xml: file not found/);
  });
});
