/** Policy archives built to be expensive to resolve (file name → content), shared by the XML limit tests. */
export const XI = 'xmlns:xi="http://www.w3.org/2001/XInclude"';

/** The security review's archive: two levels of 300 whole-file includes, 568 bytes gzipped. */
export const REVIEW_ARCHIVE: Record<string, string> = {
  'main.policy.xml': `<policy ${XI} version="0.2.0"><enclaves>${'<xi:include href="a.xml"/>'.repeat(300)}</enclaves></policy>`,
  'a.xml': `<a ${XI}>${'<xi:include href="b.xml"/>'.repeat(300)}</a>`,
  'b.xml': '<b/>',
};

/** Two levels of 300 xpointer includes: 90 000 enclaves, within the element budget and of valid shape. */
export const XPOINTER_90K: Record<string, string> = {
  'main.policy.xml': `<policy ${XI} version="0.2.0"><enclaves>${'<xi:include href="a.xml" xpointer="xpointer(/a/*)"/>'.repeat(300)}</enclaves></policy>`,
  'a.xml': `<a ${XI}>${'<xi:include href="b.xml"/>'.repeat(300)}</a>`,
  'b.xml': '<enclave path="/x"/>',
};

/** 300 × 300 topics: a valid policy at the element budget. */
export const TOPICS_AT_BUDGET: Record<string, string> = {
  'main.policy.xml': `<policy ${XI} version="0.2.0"><enclaves><enclave path="/x"><profiles><profile ns="/" node="n">${'<xi:include href="a.xml" xpointer="xpointer(/profile/*)"/>'.repeat(300)}</profile></profiles></enclave></enclaves></policy>`,
  'a.xml': `<profile ${XI}><topics publish="ALLOW">${'<xi:include href="b.xml"/>'.repeat(300)}</topics></profile>`,
  'b.xml': '<topic>t</topic>',
};
