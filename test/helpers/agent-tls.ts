/**
 * A CA made with the openssl CLI that is *not* the server's: pinning it must make the agent refuse the real
 * server's certificate.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';

export interface TestCa {
  dir: string;
  caFile: string;
  caPem: string;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

export function makeTestCa(dir: string, cn = 'agent-test-ca'): TestCa {
  fs.mkdirSync(dir, { recursive: true });
  openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'ca.key'], dir);
  openssl(['req', '-x509', '-new', '-key', 'ca.key', '-subj', `/CN=${cn}`, '-days', '2', '-out', 'ca.pem'], dir);
  return { dir, caFile: join(dir, 'ca.pem'), caPem: fs.readFileSync(join(dir, 'ca.pem'), 'utf8') };
}
