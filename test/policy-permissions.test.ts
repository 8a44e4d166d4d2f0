import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { describe, it } from 'node:test';
import { DOMParser, XMLSerializer } from '@xmldom/xmldom';
import {
  PolicyError,
  canonicalXml,
  defaultGovernance,
  defaultPermissions,
  formatValidityDate,
  fsPolicyReader,
  loadPolicy,
  policyEnclavePaths,
  policyToPermissions,
  policyToPermissionsAll,
  type PermissionsParams,
} from '../server/policy/index.js';
import { FIXTURES } from './helpers/tools.js';

const POLICIES = `${FIXTURES}/policies`;
const EXPECTED = `${FIXTURES}/expected-permissions`;
const ASSETS = new URL('../server/policy/assets/', import.meta.url);

/** The two ways the goldens were made (see the fixtures' README). */
const PARAM_SETS: Record<string, PermissionsParams> = {
  // The XSLT's built-in defaults.
  default_params: {
    notBefore: new Date('2020-05-01T00:00:00Z'),
    notAfter: new Date('2030-05-01T00:00:00Z'),
    domainId: 0,
    discoveryRule: false,
  },
  // What sros2 does at run time for a certificate with this validity.
  dates_discovery: {
    notBefore: new Date('2026-11-25T23:39:42Z'),
    notAfter: new Date('2036-11-23T23:39:42Z'),
    domainId: 0,
    discoveryRule: true,
  },
};

const read = (file: string): string => readFileSync(file, 'utf8');
const goldenPath = (policy: string, set: string): string => `${EXPECTED}/${policy}.permissions.${set}.xml`;
const resolved = (policy: string): string => loadPolicy(`${policy}.policy.xml`, fsPolicyReader(POLICIES)).xml;

/** The golden reduced to the grants of one enclave: what sros2 writes into that enclave's folder. */
function onlyGrantsOf(goldenXml: string, enclavePath: string): string {
  const doc = new DOMParser().parseFromString(goldenXml, 'text/xml');
  const grants = doc.getElementsByTagName('grant');
  for (const grant of Array.from(grants)) {
    if (grant.getAttribute('name') !== enclavePath) grant.parentNode!.removeChild(grant);
  }
  return new XMLSerializer().serializeToString(doc);
}

const allPolicies = readdirSync(POLICIES)
  .filter((f) => f.endsWith('.policy.xml'))
  .map((f) => f.slice(0, -'.policy.xml'.length))
  .sort();
const withGoldens = allPolicies.filter((p) => Object.keys(PARAM_SETS).some((set) => existsSync(goldenPath(p, set))));

describe('policy → permissions, against every sros2 golden', () => {
  it('covers every fixture policy (the others have their own tests below)', () => {
    assert.deepEqual(
      allPolicies.filter((p) => !withGoldens.includes(p)),
      ['default', 'deny_mix_example'],
    );
    assert.ok(withGoldens.length >= 5);
  });

  for (const policy of withGoldens) {
    for (const [set, params] of Object.entries(PARAM_SETS)) {
      describe(`${policy}, ${set}`, () => {
        const golden = read(goldenPath(policy, set));
        const xml = resolved(policy);
        const paths = policyEnclavePaths(xml);

        it('the whole policy gives the golden (one grant per enclave)', () => {
          const names = [...golden.matchAll(/<grant name="([^"]+)"/g)].map((m) => m[1]);
          assert.deepEqual(names, paths, 'the golden holds one grant per enclave, in policy order');
          assert.equal(canonicalXml(policyToPermissionsAll(xml, params)), canonicalXml(golden));
        });

        it('is byte-identical to sros2 output too (same pretty-printing)', () => {
          assert.equal(policyToPermissionsAll(xml, params), golden);
        });

        for (const enclavePath of paths) {
          it(`enclave ${enclavePath} gets its own grant only`, () => {
            const ours = policyToPermissions(xml, { ...params, enclavePath });
            assert.equal(canonicalXml(ours), canonicalXml(onlyGrantsOf(golden, enclavePath)));
            assert.equal([...ours.matchAll(/<grant /g)].length, 1);
          });
        }
      });
    }
  }

  it('deny_mix_example: DENY rule first, groups ordered by their first topic, duplicates dropped', () => {
    const xml = resolved('deny_mix_example');
    const golden = read(`${EXPECTED}/deny_mix_example.permissions.xml`);
    const ours = policyToPermissions(xml, { ...PARAM_SETS.default_params!, enclavePath: '/r1/nav' });
    assert.equal(canonicalXml(ours), canonicalXml(golden));
    assert.equal(canonicalXml(policyToPermissionsAll(xml, PARAM_SETS.default_params!)), canonicalXml(golden));
  });

  it('writes the domain id into every rule', () => {
    const xml = resolved('talker_listener');
    const ours = policyToPermissions(xml, { ...PARAM_SETS.dates_discovery!, domainId: 42, enclavePath: '/talker_listener/talker' });
    const expected = onlyGrantsOf(read(goldenPath('talker_listener', 'dates_discovery')), '/talker_listener/talker');
    assert.equal([...ours.matchAll(/<id>42<\/id>/g)].length, 2);
    assert.equal(canonicalXml(ours), canonicalXml(expected.replaceAll('<id>0</id>', '<id>42</id>')));
  });
});

describe('default permissions (create_enclave without a policy)', () => {
  const template = read(`${EXPECTED}/default_permissions_template.xml`);
  const fill = (enclave: string, nb: string, na: string): string =>
    template.replaceAll('@ENCLAVE@', enclave).replaceAll('@NB@', nb).replaceAll('@NA@', na);

  for (const enclave of ['/talker_listener/talker', '/', '/a']) {
    it(`equals sros2's template for ${enclave} (discovery rule included, as in the template)`, () => {
      const ours = defaultPermissions(enclave, new Date('2026-11-25T23:39:42Z'), new Date('2036-11-23T23:39:42Z'), 0);
      assert.equal(canonicalXml(ours), canonicalXml(fill(enclave, '2026-11-25T23:39:42', '2036-11-23T23:39:42')));
      assert.match(ours, /<topic>ros_discovery_info<\/topic>/);
    });
  }

  it('uses the domain id', () => {
    const ours = defaultPermissions('/x', new Date('2026-01-01T00:00:00Z'), new Date('2027-01-01T00:00:00Z'), 232);
    const expected = fill('/x', '2026-01-01T00:00:00', '2027-01-01T00:00:00').replaceAll('<id>0</id>', '<id>232</id>');
    assert.equal(canonicalXml(ours), canonicalXml(expected));
  });

  it('refuses an invalid enclave name', () => {
    assert.throws(() => defaultPermissions('x', new Date(0), new Date(1000), 0), RangeError);
  });
});

describe('permissions output and rules', () => {
  const params = PARAM_SETS.dates_discovery!;
  const policy = (profiles: string, path = '/e'): string =>
    `<policy version="0.2.0"><enclaves><enclave path="${path}">${profiles}</enclave></enclaves></policy>`;
  const topicsOf = (xml: string): string[] => [...xml.matchAll(/<topic>([^<]*)<\/topic>/g)].map((m) => m[1]!);

  it('is shaped like sros2 output: root, 2-space indent, LF, final newline', () => {
    const out = policyToPermissions(resolved('talker_listener'), { ...params, enclavePath: '/talker_listener/talker' });
    assert.ok(
      out.startsWith(
        '<dds xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:noNamespaceSchemaLocation="http://www.omg.org/spec/DDS-SECURITY/20170901/omg_shared_ca_permissions.xsd">\n  <permissions>\n    <grant name="/talker_listener/talker">\n',
      ),
    );
    assert.ok(out.endsWith('  </permissions>\n</dds>\n'));
    assert.doesNotMatch(out, /\r|\t|^(  )* [^ ]/m);
  });

  it('qualifies names: absolute, ~ (ns + node), relative (ns + "/" when missing)', () => {
    const out = policyToPermissions(
      policy(
        `<profiles><profile ns="/r1" node="nav"><topics publish="ALLOW"><topic>/abs</topic><topic>~/status</topic><topic>odom</topic></topics></profile>` +
          `<profile ns="/r2/" node="arm"><topics publish="ALLOW"><topic>joint</topic><topic>~x</topic></topics></profile></profiles>`,
      ),
      { ...params, discoveryRule: false, enclavePath: '/e' },
    );
    // Two groups, ordered by their first topic: "rt/abs" < "rt/r2/joint".
    assert.deepEqual(topicsOf(out), ['rt/abs', 'rt/r1/nav/status', 'rt/r1/odom', 'rt/r2/joint', 'rt/r2/armx']);
  });

  it('mangles services and actions per side', () => {
    const out = policyToPermissions(
      policy(
        '<profiles><profile ns="/" node="n">' +
          '<services request="ALLOW"><service>s</service></services>' +
          '<actions execute="ALLOW"><action>a</action></actions>' +
          '</profile></profiles>',
      ),
      { ...params, discoveryRule: false, enclavePath: '/e' },
    );
    const [publish, subscribe] = out.split('<subscribe>');
    assert.deepEqual(topicsOf(publish!), [
      'rq/sRequest',
      'rr/a/_action/cancel_goalReply',
      'rr/a/_action/get_resultReply',
      'rr/a/_action/send_goalReply',
      'rt/a/_action/feedback',
      'rt/a/_action/status',
    ]);
    assert.deepEqual(topicsOf(subscribe!), [
      'rq/a/_action/cancel_goalRequest',
      'rq/a/_action/get_resultRequest',
      'rq/a/_action/send_goalRequest',
      'rr/sReply',
    ]);
  });

  it('writes one grant per <profiles> of the enclave', () => {
    const one = '<profiles><profile ns="/" node="n"><topics publish="ALLOW"><topic>t</topic></topics></profile></profiles>';
    const out = policyToPermissions(policy(one + one), { ...params, enclavePath: '/e' });
    assert.equal([...out.matchAll(/<grant name="\/e">/g)].length, 2);
  });

  it('takes the first enclave when a path appears twice (as sros2 does)', () => {
    const xml =
      '<policy version="0.2.0"><enclaves>' +
      '<enclave path="/e"><profiles><profile ns="/" node="n"><topics publish="ALLOW"><topic>first</topic></topics></profile></profiles></enclave>' +
      '<enclave path="/e"><profiles><profile ns="/" node="n"><topics publish="ALLOW"><topic>second</topic></topics></profile></profiles></enclave>' +
      '</enclaves></policy>';
    assert.deepEqual(policyEnclavePaths(xml), ['/e']);
    assert.deepEqual(topicsOf(policyToPermissions(xml, { ...params, discoveryRule: false, enclavePath: '/e' })), ['rt/first']);
  });

  it('writes validity in UTC, to the second, without a zone', () => {
    assert.equal(formatValidityDate(new Date('2026-11-25T23:39:42.999Z')), '2026-11-25T23:39:42');
    assert.equal(formatValidityDate(new Date('2026-11-26T01:39:42+02:00')), '2026-11-25T23:39:42');
    assert.throws(() => formatValidityDate(new Date('nonsense')), RangeError);
    assert.throws(() => formatValidityDate(new Date('+010000-01-01T00:00:00Z')), RangeError);
  });

  it('refuses bad parameters', () => {
    const xml = resolved('talker_listener');
    const enclavePath = '/talker_listener/talker';
    assert.throws(() => policyToPermissions(xml, { ...params, enclavePath, domainId: 233 }), RangeError);
    assert.throws(() => policyToPermissions(xml, { ...params, enclavePath, notAfter: params.notBefore }), RangeError);
  });

  // [what, policy, enclave, message]
  const refusals: Array<[string, string, string, RegExp]> = [
    ['an absent enclave, listing those present', resolved('talker_listener'), '/nope', /no enclave "\/nope" \(it has: \/talker_listener\/talker, \/talker_listener\/listener\)/],
    ['unresolved includes', read(`${POLICIES}/sample.policy.xml`), '/sample_policy/admin', /xi:include.*resolve its includes first/],
    ['another root element', '<dds/>', '/e', /root element of a policy must be <policy>/],
    ['broken XML', '<policy><enclaves>', '/e', /policy: not well-formed XML/],
    ['an enclave without profiles', policy(''), '/e', /enclave "\/e" has no <profiles>/],
    ['a qualifier that is not ALLOW or DENY', policy('<profiles><profile ns="/" node="n"><topics publish="allow"><topic>t</topic></topics></profile></profiles>'), '/e', /node="n": <topics publish="allow"> must be ALLOW or DENY/],
    ['a qualifier of another kind', policy('<profiles><profile ns="/" node="n"><services publish="ALLOW"><service>s</service></services></profile></profiles>'), '/e', /<services> has unexpected attribute publish \(allowed: request, reply\)/],
    ['an unknown entry', policy('<profiles><profile ns="/" node="n"><params/></profile></profiles>'), '/e', /unexpected <params> \(expected topics, services or actions\)/],
    ['a wrong item', policy('<profiles><profile ns="/" node="n"><topics publish="ALLOW"><service>t</service></topics></profile></profiles>'), '/e', /<topics> may contain only <topic>, not <service>/],
  ];
  for (const [what, xml, enclavePath, message] of refusals) {
    it(`refuses ${what}`, () => {
      assert.throws(
        () => policyToPermissions(xml, { ...params, enclavePath }),
        (err: unknown) => err instanceof PolicyError && err.status === 422 && message.test(err.message),
      );
    });
  }
});

describe('default governance', () => {
  const fixture = read(`${FIXTURES}/governance.default.xml`);

  it('domain 0 is byte-for-byte sros2 default governance.xml', () => {
    assert.equal(defaultGovernance(0), fixture);
  });

  it('another domain changes the domain id only', () => {
    const g = defaultGovernance(42);
    assert.equal(g, fixture.replace('<id>0</id>', '<id>42</id>'));
    assert.notEqual(g, fixture);
  });

  it('refuses a domain id ROS cannot use', () => {
    assert.throws(() => defaultGovernance(233), RangeError);
    assert.throws(() => defaultGovernance(-1), RangeError);
  });
});

describe('shipped assets', () => {
  const copies: Array<[string, string]> = [
    ['policy.xsd', 'schemas/policy.xsd'],
    ['permissions.xsd', 'schemas/permissions.xsd'],
    ['governance.xsd', 'schemas/governance.xsd'],
    ['xml.xsd', 'schemas/xml.xsd'],
    ['governance.default.xml', 'governance.default.xml'],
    ['default.policy.xml', 'policies/default.policy.xml'],
    ['default_permissions_template.xml', 'expected-permissions/default_permissions_template.xml'],
  ];
  for (const [asset, fixture] of copies) {
    it(`${asset} is sros2's file, unchanged`, () => {
      assert.equal(readFileSync(new URL(asset, ASSETS), 'utf8'), read(`${FIXTURES}/${fixture}`));
    });
  }
});
