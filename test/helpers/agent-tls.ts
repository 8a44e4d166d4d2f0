/**
 * Test PKI made with the openssl CLI: a CA, a server certificate for 127.0.0.1/localhost (for the HTTPS stub
 * server the agent pins), and leaf certificates with chosen validity dates (for the clock checks).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { join } from 'node:path';

export interface TestPki {
  dir: string;
  caFile: string;
  caPem: string;
  serverKey: string;
  serverCert: string;
}

function openssl(args: string[], cwd: string): void {
  execFileSync('openssl', args, { cwd, stdio: ['ignore', 'ignore', 'pipe'] });
}

export function makeTestPki(dir: string, cn = 'agent-test-ca'): TestPki {
  fs.mkdirSync(dir, { recursive: true });
  openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'ca.key'], dir);
  openssl(['req', '-x509', '-new', '-key', 'ca.key', '-subj', `/CN=${cn}`, '-days', '2', '-out', 'ca.pem'], dir);
  openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'server.key'], dir);
  openssl(['req', '-new', '-key', 'server.key', '-subj', '/CN=127.0.0.1', '-out', 'server.csr'], dir);
  fs.writeFileSync(join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n');
  openssl(
    ['x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-extfile', 'server.ext', '-out', 'server.pem'],
    dir,
  );
  return {
    dir,
    caFile: join(dir, 'ca.pem'),
    caPem: fs.readFileSync(join(dir, 'ca.pem'), 'utf8'),
    serverKey: fs.readFileSync(join(dir, 'server.key'), 'utf8'),
    serverCert: fs.readFileSync(join(dir, 'server.pem'), 'utf8'),
  };
}

function stamp(d: Date): string {
  return d.toISOString().replace(/[-:T]/g, '').replace(/\.\d+Z$/, 'Z').slice(2); // YYMMDDHHMMSSZ
}

/** A leaf certificate signed by the test CA with the given validity (openssl ca -startdate/-enddate). */
export function makeLeafCert(pki: TestPki, cn: string, notBefore: Date, notAfter: Date): string {
  const work = fs.mkdtempSync(join(pki.dir, 'leaf-'));
  fs.writeFileSync(join(work, 'index.txt'), '');
  fs.writeFileSync(join(work, 'serial'), '1000\n');
  fs.writeFileSync(
    join(work, 'ca.cnf'),
    [
      '[ca]',
      'default_ca = test',
      '[test]',
      `dir = ${work}`,
      'database = $dir/index.txt',
      'serial = $dir/serial',
      'new_certs_dir = $dir',
      `certificate = ${pki.caFile}`,
      `private_key = ${join(pki.dir, 'ca.key')}`,
      'default_md = sha256',
      'policy = any',
      'unique_subject = no',
      '[any]',
      'commonName = supplied',
      '',
    ].join('\n'),
  );
  openssl(['ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'leaf.key'], work);
  openssl(['req', '-new', '-key', 'leaf.key', '-subj', `/CN=${cn}`, '-out', 'leaf.csr'], work);
  openssl(
    ['ca', '-batch', '-config', 'ca.cnf', '-in', 'leaf.csr', '-startdate', stamp(notBefore), '-enddate', stamp(notAfter), '-out', 'leaf.pem', '-notext'],
    work,
  );
  return fs.readFileSync(join(work, 'leaf.pem'), 'utf8');
}
