import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { writeSecretFile } from '../bootstrap.js';
import type { Logger } from '../logger.js';
import { generateKeyPair, inspectCertificate, issueCertificate } from '../pki/index.js';
import type { Sealer } from '../secrets/seal.js';

export interface TlsMaterial {
  cert: string;
  key: string;
  caFile?: string;
}

const CA_CONTEXT = 'tls-ca-key';
const DAY = 86_400_000;

/** Names the server certificate must cover: loopback, the configured host, this machine, and extras. */
export function serverNames(listenHost: string, extra: string[]): { dns: string[]; ips: string[] } {
  const all = new Set(['localhost', '127.0.0.1', '::1', os.hostname(), ...extra]);
  if (listenHost && listenHost !== '0.0.0.0' && listenHost !== '::') all.add(listenHost);
  const dns: string[] = [];
  const ips: string[] = [];
  for (const name of all) (net.isIP(name) ? ips : dns).push(name);
  return { dns: dns.sort(), ips: ips.sort() };
}

/**
 * The self-generated TLS setup: a CA (what clients pin: `<data>/tls/ca.cert.pem`) and a server certificate
 * it signs. The CA key is kept sealed with the master key, so the server certificate can be re-issued for
 * new host names (`--tls-san`) without clients having to pin a new CA. Nothing is regenerated when the
 * names are already covered.
 */
export function ensureSelfSignedTls(
  dataDir: string,
  listenHost: string,
  extraNames: string[],
  sealer: Sealer,
  logger: Logger,
): TlsMaterial {
  const dir = path.join(dataDir, 'tls');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const caCertFile = path.join(dir, 'ca.cert.pem');
  const caKeyFile = path.join(dir, 'ca.key.sealed');
  const certFile = path.join(dir, 'server.cert.pem');
  const keyFile = path.join(dir, 'server.key.pem');
  const now = Date.now();

  if (!fs.existsSync(caCertFile)) {
    const ca = generateKeyPair();
    const caCert = issueCertificate({
      subjectCN: `enclave-server TLS CA ${crypto.randomBytes(4).toString('hex')}`,
      publicKeyPem: ca.publicKeyPem,
      issuer: { keyPem: ca.privateKeyPem },
      notBefore: new Date(now - DAY),
      notAfter: new Date(now + 3650 * DAY),
      profile: 'tls-ca',
    });
    writeSecretFile(caKeyFile, sealer.seal(ca.privateKeyPem, CA_CONTEXT));
    fs.writeFileSync(caCertFile, caCert, { mode: 0o644 });
    fs.rmSync(certFile, { force: true });
    logger.info({ file: caCertFile }, 'created TLS CA (clients pin this certificate)');
  }

  const names = serverNames(listenHost, extraNames);
  if (fs.existsSync(certFile) && fs.existsSync(keyFile)) {
    const x = new crypto.X509Certificate(fs.readFileSync(certFile));
    const covered = names.dns.every((n) => x.checkHost(n, { wildcards: false }) === n) && names.ips.every((ip) => x.checkIP(ip) === ip);
    const fresh = inspectCertificate(x.toString()).notAfter.getTime() - now > 30 * DAY;
    if (covered && fresh) return { cert: fs.readFileSync(certFile, 'utf8'), key: fs.readFileSync(keyFile, 'utf8'), caFile: caCertFile };
    logger.info({ names }, 'server certificate does not cover the configured names or expires soon; re-issuing');
  }

  const caKeyPem = sealer.openText(fs.readFileSync(caKeyFile, 'utf8'), CA_CONTEXT);
  const caCertPem = fs.readFileSync(caCertFile, 'utf8');
  const leaf = generateKeyPair();
  const cert = issueCertificate({
    subjectCN: names.dns[0] ?? 'localhost',
    publicKeyPem: leaf.publicKeyPem,
    issuer: { certPem: caCertPem, keyPem: caKeyPem },
    notBefore: new Date(now - DAY),
    notAfter: new Date(now + 825 * DAY),
    profile: 'tls-server',
    dnsNames: names.dns,
    ipAddresses: names.ips,
  });
  fs.rmSync(keyFile, { force: true });
  writeSecretFile(keyFile, leaf.privateKeyPem);
  fs.writeFileSync(certFile, cert + caCertPem, { mode: 0o644 });
  logger.info({ file: certFile, names }, 'issued TLS server certificate');
  return { cert: cert + caCertPem, key: leaf.privateKeyPem, caFile: caCertFile };
}
