import { hkdfSync, randomBytes } from 'node:crypto'
import { argon2id } from './argon2.js'
import { RepoKeys } from './keys.js'
import { XCHACHA_NONCE_BYTES, xchachaOpen, xchachaSeal } from './xchacha.js'

/**
 * The repository config: the one plaintext object in the bucket. It holds the
 * format version, storage facts probed at init, data-layout parameters, and the
 * key slots — each slot is the master key wrapped under a key-encryption key
 * derived from a passphrase (Argon2id) or a key file (HKDF). A MAC under a
 * master-derived key covers the whole body, so nobody without the key can alter
 * it (e.g. downgrade parameters or graft a slot).
 */

export const FORMAT = 's0fs-repository'
/**
 * 1: the first layout. 2: large compressed blobs may be framed (blob/codec.ts).
 * Every version reads its predecessors; a repository is written in the
 * version it was created with.
 */
export const FORMAT_VERSION = 2

export interface KdfParams {
  alg: 'argon2id13' | 'hkdf-sha256'
  salt: string
  /** Argon2id only. */
  ops?: number
  mem?: number
}

export interface KeySlot {
  id: string
  kind: 'passphrase' | 'keyfile'
  label?: string
  created: string
  kdf: KdfParams
  /** base64(nonce | XChaCha20-Poly1305 ciphertext of the master key). */
  wrapped: string
}

export interface RepoConfig {
  format: typeof FORMAT
  version: number
  id: string
  created: string
  storage: {
    /** Whether the server honours If-None-Match / If-Match (probed at init). */
    conditionalWrites: boolean
    backend: string
  }
  chunking: { min: number; avg: number; max: number }
  compression: 'zstd'
  slots: KeySlot[]
  mac?: string
}

/** A secret that opens a slot. */
export type Credential = { kind: 'passphrase'; passphrase: string } | { kind: 'keyfile'; key: Buffer }

export class WrongKeyError extends Error {
  constructor(detail: string) {
    super(detail)
    this.name = 'WrongKeyError'
  }
}

export class ConfigError extends Error {
  constructor(detail: string) {
    super(detail)
    this.name = 'ConfigError'
  }
}

export const ARGON2_OPS = 3
export const ARGON2_MEM = 64 * 1024 * 1024

export function newConfig(storage: RepoConfig['storage']): RepoConfig {
  return {
    format: FORMAT,
    version: FORMAT_VERSION,
    id: randomBytes(16).toString('hex'),
    created: new Date().toISOString(),
    storage,
    chunking: { min: 256 * 1024, avg: 1024 * 1024, max: 4 * 1024 * 1024 },
    compression: 'zstd',
    slots: [],
  }
}

/** Serializes with the MAC computed over the body (all fields but `mac`, in a fixed order). */
export function encodeConfig(config: RepoConfig, keys: RepoKeys): Buffer {
  const { mac: _ignored, ...body } = config
  const text = canonicalJson(body)
  return Buffer.from(JSON.stringify({ ...body, mac: keys.configMac(text) }, null, 2) + '\n')
}

/** Parses and checks the format, before any key is known. */
export function parseConfig(data: Buffer, where: string): RepoConfig {
  let config: RepoConfig
  try {
    config = JSON.parse(data.toString('utf8'))
  } catch {
    throw new ConfigError(`${where} is not an s0fs repository: its config is not valid JSON`)
  }
  if (config?.format !== FORMAT) throw new ConfigError(`${where} is not an s0fs repository (config format ${JSON.stringify(config?.format)})`)
  if (typeof config.version !== 'number' || config.version > FORMAT_VERSION) {
    throw new ConfigError(`${where} uses repository format version ${config.version}; this s0fs reads versions 1 to ${FORMAT_VERSION}: upgrade s0fs`)
  }
  if (config.version < 1 || !Array.isArray(config.slots) || typeof config.id !== 'string') {
    throw new ConfigError(`${where} has a malformed config (version ${config.version})`)
  }
  return config
}

/** Checks the config MAC once the master key is known. */
export function verifyConfig(config: RepoConfig, keys: RepoKeys, where: string): void {
  const { mac, ...body } = config
  if (!mac || !keys.verifyConfigMac(canonicalJson(body), mac)) {
    throw new ConfigError(`${where}: the repository config was modified by someone without the key (MAC mismatch)`)
  }
}

export async function addSlot(config: RepoConfig, master: Buffer, credential: Credential, label?: string): Promise<KeySlot> {
  const salt = randomBytes(16)
  const kdf: KdfParams =
    credential.kind === 'passphrase'
      ? { alg: 'argon2id13', salt: salt.toString('base64'), ops: ARGON2_OPS, mem: ARGON2_MEM }
      : { alg: 'hkdf-sha256', salt: salt.toString('base64') }
  const slot: KeySlot = { id: randomBytes(4).toString('hex'), kind: credential.kind, created: new Date().toISOString(), kdf, wrapped: '' }
  if (label) slot.label = label
  const kek = await deriveKek(credential, kdf)
  const nonce = randomBytes(XCHACHA_NONCE_BYTES)
  const ct = xchachaSeal(master, slotAad(config.id, slot), nonce, kek)
  slot.wrapped = Buffer.concat([nonce, ct]).toString('base64')
  config.slots.push(slot)
  return slot
}

/** Tries every slot of the credential's kind; returns the master key and the slot that opened. */
export async function unlock(config: RepoConfig, credential: Credential): Promise<{ master: Buffer; slot: KeySlot }> {
  const candidates = config.slots.filter((s) => s.kind === credential.kind)
  if (candidates.length === 0) {
    throw new WrongKeyError(`this repository has no ${credential.kind} key slot (it has: ${[...new Set(config.slots.map((s) => s.kind))].join(', ') || 'none'})`)
  }
  for (const slot of candidates) {
    const kek = await deriveKek(credential, slot.kdf)
    const wrapped = Buffer.from(slot.wrapped, 'base64')
    try {
      const nonce = wrapped.subarray(0, XCHACHA_NONCE_BYTES)
      const master = xchachaOpen(wrapped.subarray(XCHACHA_NONCE_BYTES), slotAad(config.id, slot), nonce, kek)
      return { master, slot }
    } catch {
      // Not this slot; try the next.
    }
  }
  throw new WrongKeyError(
    credential.kind === 'passphrase' ? 'wrong passphrase: no key slot of this repository opens with it' : 'wrong key file: no key slot of this repository opens with it',
  )
}

async function deriveKek(credential: Credential, kdf: KdfParams): Promise<Uint8Array> {
  const salt = Buffer.from(kdf.salt, 'base64')
  if (credential.kind === 'passphrase') {
    if (kdf.alg !== 'argon2id13') throw new ConfigError(`passphrase slot with unexpected KDF ${kdf.alg}`)
    return argon2id(Buffer.from(credential.passphrase, 'utf8'), salt, kdf.ops!, kdf.mem!)
  }
  if (kdf.alg !== 'hkdf-sha256') throw new ConfigError(`key-file slot with unexpected KDF ${kdf.alg}`)
  return new Uint8Array(hkdfSync('sha256', credential.key, salt, 's0fs/v1/key-slot', 32))
}

function slotAad(repoId: string, slot: KeySlot): Uint8Array {
  return Buffer.from(`s0fs-slot\0${repoId}\0${slot.id}\0${slot.kind}\0${canonicalJson(slot.kdf)}`)
}

/** JSON with object keys sorted, so the MAC does not depend on key order. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`
  }
  return JSON.stringify(value)
}
