/**
 * Enclave file contents for the writer and bundle-validation unit tests (test/agent-writer.test.ts): each
 * file names its tag and itself, so a test can tell generations and files apart. These tests exercise the
 * agent's own functions directly, with no server; every test that needs a server uses the real one
 * (helpers/agent-server.ts) and real certificates.
 */
export function taggedEnclaveFiles(tag: string, opts: { crl?: boolean; size?: number } = {}): Record<string, string> {
  const pad = 'x'.repeat(opts.size ?? 64);
  const file = (name: string): string => `BEGIN ${tag} ${name}\n${pad}\nEND ${tag} ${name}\n`;
  const names = ['identity_ca.cert.pem', 'cert.pem', 'key.pem', 'permissions_ca.cert.pem', 'governance.p7s', 'permissions.p7s'];
  if (opts.crl) names.push('crl.pem');
  return Object.fromEntries(names.map((n) => [n, file(n)]));
}
