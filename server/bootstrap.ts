import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { ServerConfig } from './config.js';
import { ConfigError } from './config.js';
import type { Logger } from './logger.js';
import { parseMasterKey, Sealer } from './secrets/seal.js';

/**
 * Start-up material that lives in the data folder. Each item is created once, with owner-only modes,
 * and reused on every later start: nothing is ever regenerated behind the operator's back.
 */

export function prepareDataDir(dir: string, logger: Logger): void {
  if (!fs.existsSync(dir)) {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    logger.info({ dataDir: dir }, 'created data folder');
  }
  const mode = fs.statSync(dir).mode & 0o777;
  if (mode & 0o077) logger.warn({ dataDir: dir, mode: mode.toString(8) }, 'data folder is readable by others; expected 0700');
}

/**
 * Writes a new file with mode 0600, all or nothing: the content goes to a temporary file first, which is then
 * hard-linked into place (failing if the file exists: no race with a second process). A crash or a full disk
 * never leaves a short secret behind.
 */
export function writeSecretFile(file: string, content: string | Buffer): void {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`;
  const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
  try {
    try {
      fs.writeFileSync(fd, content);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.linkSync(tmp, file);
  } finally {
    fs.rmSync(tmp, { force: true });
  }
}

function readOrCreate(file: string, make: () => Buffer, logger: Logger, what: string): Buffer {
  if (fs.existsSync(file)) {
    const value = fs.readFileSync(file);
    // Never run with a damaged secret: an empty HMAC key would let anyone forge tokens.
    if (value.length < 32) throw new ConfigError(`${file} is damaged (${value.length} bytes, expected 32): restore it from a backup, or delete it to make a new ${what}`);
    return value;
  }
  const value = make();
  writeSecretFile(file, value);
  logger.info({ file }, `created ${what}`);
  return value;
}

/**
 * A 32-byte secret from the operator's file (`ENCLAVE_*_FILE`: replicas read the same file, so they agree) or,
 * by default, from the data folder, created on first start. Raw, 64 hex characters or base64.
 */
function loadKey(configured: string | undefined, fallback: string, setting: string, what: string, logger: Logger): Buffer {
  let raw: Buffer;
  if (configured) {
    try {
      raw = fs.readFileSync(configured);
    } catch {
      throw new ConfigError(`${setting}: cannot read ${configured}`);
    }
  } else {
    raw = readOrCreate(fallback, () => crypto.randomBytes(32), logger, what);
  }
  try {
    return parseMasterKey(raw);
  } catch {
    throw new ConfigError(`${what} ${configured ?? fallback} must hold 32 bytes (raw, 64 hex characters or base64)`);
  }
}

export function loadMasterKey(config: ServerConfig, logger: Logger): Sealer {
  return new Sealer([loadKey(config.masterKeyFile, path.join(config.dataDir, 'master.key'), 'ENCLAVE_MASTER_KEY_FILE', 'master key', logger)]);
}

/** The HS256 key of every token this server issues; every replica must read the same one. */
export function loadJwtSecret(config: ServerConfig, logger: Logger): Buffer {
  return loadKey(config.tokenSecretFile, path.join(config.dataDir, 'jwt.secret'), 'ENCLAVE_TOKEN_SECRET_FILE', 'token signing secret', logger);
}
