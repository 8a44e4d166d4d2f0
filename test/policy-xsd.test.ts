import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { describe, it } from 'node:test';
import {
  defaultGovernance,
  defaultPermissions,
  fsPolicyReader,
  loadPolicy,
  policyEnclavePaths,
  policyToPermissions,
  policyToPermissionsAll,
  validateXml,
  validateXmlBatch,
  type PermissionsParams,
} from '../server/policy/index.js';
import { EXAMPLE_POLICIES, FIXTURES } from './helpers/tools.js';

const POLICIES = `${FIXTURES}/policies`;

const PARAM_SETS: Record<string, PermissionsParams> = {
  default_params: {
    notBefore: new Date('2020-05-01T00:00:00Z'),
    notAfter: new Date('2030-05-01T00:00:00Z'),
    domainId: 0,
    discoveryRule: false,
  },
  dates_discovery: {
    notBefore: new Date('2026-11-25T23:39:42Z'),
    notAfter: new Date('2036-11-23T23:39:42Z'),
    domainId: 7,
    discoveryRule: true,
  },
};

const policies = readdirSync(POLICIES)
  .filter((f) => f.endsWith('.policy.xml'))
  .sort();
assert.ok(policies.length >= 7 && existsSync(`${POLICIES}/common/node.xml`));

describe('generated permissions validate against permissions.xsd', () => {
  for (const file of policies) {
    const xml = loadPolicy(file, fsPolicyReader(POLICIES)).xml;
    for (const [set, params] of Object.entries(PARAM_SETS)) {
      it(`${file}, ${set}: the whole policy and each enclave`, async () => {
        const documents = [
          policyToPermissionsAll(xml, params),
          ...policyEnclavePaths(xml).map((enclavePath) => policyToPermissions(xml, { ...params, enclavePath })),
        ];
        assert.deepEqual(await validateXmlBatch(documents, 'permissions'), documents.map(() => []));
      });
    }
  }

  it('default permissions', async () => {
    const d = defaultPermissions('/talker_listener/talker', new Date('2026-11-25T23:39:42Z'), new Date('2036-11-23T23:39:42Z'), 0);
    assert.deepEqual(await validateXml(d, 'permissions'), []);
  });
});

describe('other documents', () => {
  it('default governance validates against governance.xsd', async () => {
    assert.deepEqual(await validateXml(defaultGovernance(0), 'governance'), []);
    assert.deepEqual(await validateXml(defaultGovernance(232), 'governance'), []);
  });

  for (const file of [...policies, 'common/lifecycle_node.xml']) {
    const expectValid = file.endsWith('.policy.xml');
    it(`${file} ${expectValid ? 'validates' : 'does not validate'} against policy.xsd after XInclude`, async () => {
      const problems = await validateXml(loadPolicy(file, fsPolicyReader(POLICIES)).xml, 'policy');
      if (expectValid) assert.deepEqual(problems, []);
      else assert.match(problems.join('\n'), /Element 'profile'.*No matching global declaration/);
    });
  }

  it('xml:base is accepted where libxml2 puts it, and refused elsewhere (xml.xsd really is imported)', async () => {
    const policy = (enclaveAttr: string) =>
      `<policy version="0.2.0"><enclaves><enclave path="/a"${enclaveAttr}><profiles><profile ns="/" node="n">` +
      '<topics publish="ALLOW" xml:base="common/x.xml"><topic>t</topic></topics></profile></profiles></enclave></enclaves></policy>';
    assert.deepEqual(await validateXml(policy(''), 'policy'), []);
    const problems = await validateXml(policy(' xml:base="x/y.xml"'), 'policy');
    assert.equal(problems.length, 1);
    assert.match(problems[0]!, /^line 1: Element 'enclave', attribute '\{http:\/\/www.w3.org\/XML\/1998\/namespace\}base'/);
  });
});

describe('examples/policies (the README walkthrough)', () => {
  const examples = readdirSync(EXAMPLE_POLICIES).filter((f) => f.endsWith('.policy.xml'));

  it('holds a policy, and every one validates against policy.xsd after XInclude', async () => {
    assert.deepEqual(examples, ['talker_listener.policy.xml']);
    for (const file of examples) assert.deepEqual(await validateXml(loadPolicy(file, fsPolicyReader(EXAMPLE_POLICIES)).xml, 'policy'), [], file);
  });

  it('gives the talker chatter to publish only and the listener chatter to subscribe only, plus the common/ rules', async () => {
    const xml = loadPolicy('talker_listener.policy.xml', fsPolicyReader(EXAMPLE_POLICIES)).xml;
    assert.deepEqual(policyEnclavePaths(xml), ['/talker_listener/talker', '/talker_listener/listener']);
    const rules = (enclavePath: string, kind: 'publish' | 'subscribe') => {
      const doc = policyToPermissions(xml, { ...PARAM_SETS.default_params!, enclavePath });
      const block = new RegExp(`<${kind}>([\\s\\S]*?)</${kind}>`).exec(doc)?.[1] ?? '';
      return [...block.matchAll(/<topic>([^<]+)<\/topic>/g)].map((m) => m[1]);
    };
    assert.ok(rules('/talker_listener/talker', 'publish').includes('rt/chatter'));
    assert.ok(!rules('/talker_listener/talker', 'subscribe').includes('rt/chatter'));
    assert.ok(rules('/talker_listener/listener', 'subscribe').includes('rt/chatter'));
    assert.ok(!rules('/talker_listener/listener', 'publish').includes('rt/chatter'));
    // From common/rclcpp_node.xml and common/sim_time.xml, through the includes.
    assert.ok(rules('/talker_listener/listener', 'publish').includes('rt/rosout'));
    assert.ok(rules('/talker_listener/listener', 'subscribe').includes('rq/listener/get_parametersRequest'));
    assert.ok(rules('/talker_listener/talker', 'subscribe').includes('rt/clock'));
    const documents = policyEnclavePaths(xml).map((enclavePath) => policyToPermissions(xml, { ...PARAM_SETS.default_params!, enclavePath }));
    assert.deepEqual(await validateXmlBatch(documents, 'permissions'), documents.map(() => []));
  });
});

describe('problem lists', () => {
  it('name the element and line in a permissions document missing parts', async () => {
    const broken = defaultPermissions('/x', new Date('2026-01-01T00:00:00Z'), new Date('2027-01-01T00:00:00Z'), 0).replace(
      /\s*<validity>[\s\S]*?<\/validity>/,
      '',
    );
    const problems = await validateXml(broken, 'permissions');
    assert.equal(problems.length, 1);
    assert.match(problems[0]!, /^line 5: Element 'allow_rule': This element is not expected. Expected is \( validity \)/);
  });

  it('name the element with a bad value', async () => {
    const broken = defaultGovernance(0).replace('<rtps_protection_kind>SIGN<', '<rtps_protection_kind>SIGNED<');
    const problems = await validateXml(broken, 'governance');
    assert.ok(problems.length >= 1);
    assert.match(problems[0]!, /^line \d+: Element 'rtps_protection_kind': .*'SIGNED'/);
  });

  it('name a policy attribute outside its enumeration', async () => {
    const problems = await validateXml(
      '<policy version="0.2.0"><enclaves><enclave path="/a"><profiles><profile ns="/" node="n">\n<topics publish="MAYBE"><topic>t</topic></topics></profile></profiles></enclave></enclaves></policy>',
      'policy',
    );
    assert.ok(problems.some((p) => /^line 2: Element 'topics', attribute 'publish'/.test(p)), problems.join('\n'));
  });

  it('are kept apart per document in a batch', async () => {
    const good = defaultGovernance(0);
    const results = await validateXmlBatch([good, '<dds>\n<x>', good, '<dds/>', good], 'governance');
    assert.deepEqual(results[0], []);
    assert.match(results[1]!.join('\n'), /^line 2: not well-formed/);
    assert.deepEqual(results[2], []);
    assert.match(results[3]!.join('\n'), /Element 'dds': Missing child element/);
    assert.deepEqual(results[4], []);
    assert.deepEqual(await validateXmlBatch([], 'governance'), []);
  });

  it('report a document that is not well-formed', async () => {
    const problems = await validateXml('<dds>\n<permissions></dds>', 'permissions');
    assert.ok(problems.length >= 1);
    assert.match(problems[0]!, /^line 2: not well-formed: Opening and ending tag mismatch/);
  });
});
