import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DOMParser } from '@xmldom/xmldom';
import { elementDepth, tagDepthExceeds } from '../server/policy/xml.js';

// The pre-parse depth scan must agree with the parsed tree on well-formed text, or a legal policy would be
// refused (or an over-deep one let through to the slow parser).
function depthByScan(text: string): number {
  let d = 0;
  while (tagDepthExceeds(text, d)) d++;
  return d;
}

const CASES: Record<string, string> = {
  'a root alone': '<a/>',
  'self-closing children': '<a><b/><b /><c x="1"/></a>',
  'a ">" and "/>" inside attribute values': `<a x="1>2" y='/>'><b z="a/"><c/></b></a>`,
  'tags inside comments and CDATA': '<a><!-- <b><c><d> --><![CDATA[<b><c><d><e>]]><b>t</b></a>',
  'processing instructions and a prolog': '<?xml version="1.0"?><!-- x --><a><?pi <b><c>?><b><c/></b></a>',
  'text with ">"': '<a>x &gt; y > z<b>1 > 0</b></a>',
  'siblings after a deep branch': '<a><b><c><d/></c></b><b/><b><c/></b></a>',
};

for (const [name, xml] of Object.entries(CASES)) {
  test(`the scan counts what the parser builds: ${name}`, () => {
    const doc = new DOMParser().parseFromString(xml, 'text/xml');
    assert.equal(depthByScan(xml), elementDepth(doc));
  });
}

test('random well-formed trees: the scan and the parsed depth agree', () => {
  let seed = 7;
  const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
  const node = (level: number): string => {
    if (level > 12 || rand(4) === 0) return rand(2) ? '<l/>' : '<l a="&gt;/>">t</l>';
    let inner = '';
    for (let k = rand(4); k >= 0; k--) inner += rand(6) === 0 ? '<!-- <x> -->' : node(level + 1);
    return `<n k='v'>${inner}</n>`;
  };
  for (let i = 0; i < 200; i++) {
    const xml = node(0);
    assert.equal(depthByScan(xml), elementDepth(new DOMParser().parseFromString(xml, 'text/xml')), xml);
  }
});

test('20 000 levels are refused by the scan; 256 are not', () => {
  const deep = `${'<e>'.repeat(20_000)}${'</e>'.repeat(20_000)}`;
  assert.equal(tagDepthExceeds(deep, 256), true);
  assert.equal(tagDepthExceeds(`${'<e>'.repeat(256)}${'</e>'.repeat(256)}`, 256), false);
});
