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

export function loadMasterKey(config: ServerConfig, logger: Logger): Sealer {
  const file = config.masterKeyFile ?? path.join(config.dataDir, 'master.key');
  let raw: Buffer;
  if (config.masterKeyFile) {
    try {
      raw = fs.readFileSync(file);
    } catch {
      throw new ConfigError(`ENCLAVE_MASTER_KEY_FILE: cannot read ${file}`);
    }
  } else {
    raw = readOrCreate(file, () => crypto.randomBytes(32), logger, 'master key');
  }
  try {
    return new Sealer([parseMasterKey(raw)]);
  } catch (err) {
    throw new ConfigError(`master key ${file}: ${(err as Error).message}`);
  }
}

export function loadJwtSecret(dataDir: string, logger: Logger): Buffer {
  return readOrCreate(path.join(dataDir, 'jwt.secret'), () => crypto.randomBytes(32), logger, 'token signing secret');
}
