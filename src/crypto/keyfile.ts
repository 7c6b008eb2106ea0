import { randomBytes } from 'node:crypto'
import { promises as fsp, constants as fsc } from 'node:fs'
import path from 'node:path'

/** A key file holds 32 random bytes, raw, readable by its owner only. */
export const KEY_FILE_BYTES = 32

export class KeyFileError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'KeyFileError'
  }
}

/** Creates a new key file (mode 0600); refuses to overwrite an existing file. */
export async function createKeyFile(file: string): Promise<Buffer> {
  const key = randomBytes(KEY_FILE_BYTES)
  await fsp.mkdir(path.dirname(file), { recursive: true, mode: 0o700 })
  let handle: fsp.FileHandle
  try {
    handle = await fsp.open(file, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new KeyFileError(`key file ${file} already exists; not overwriting it`)
    throw err
  }
  try {
    await handle.writeFile(key)
    await handle.sync()
  } finally {
    await handle.close()
  }
  return key
}

/**
 * Reads a key file, refusing one that group or others can read: a key that
 * leaked to other local users is not a secret, and silently using it would
 * hide that.
 */
export async function readKeyFile(file: string): Promise<Buffer> {
  let st: import('node:fs').Stats
  try {
    st = await fsp.stat(file)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new KeyFileError(`key file ${file} does not exist`)
    throw new KeyFileError(`cannot read key file ${file}: ${(err as Error).message}`)
  }
  if (!st.isFile()) throw new KeyFileError(`key file ${file} is not a regular file`)
  if ((st.mode & 0o077) !== 0) {
    throw new KeyFileError(
      `key file ${file} is accessible by group or others (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}); run: chmod 600 ${file}`,
    )
  }
  const data = await fsp.readFile(file)
  if (data.length === KEY_FILE_BYTES) return data
  // Also accept the key as base64 text (e.g. pasted from a secret manager).
  const text = data.toString('utf8').trim()
  const decoded = Buffer.from(text, 'base64')
  if (decoded.length === KEY_FILE_BYTES && decoded.toString('base64') === text) return decoded
  throw new KeyFileError(`key file ${file} must hold ${KEY_FILE_BYTES} bytes (raw or base64), found ${data.length} bytes`)
}
