import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto'
import { createRequire } from 'node:module'
import { chmodSync, statSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import {
  addSlot,
  createKeyFile,
  DecryptError,
  encodeConfig,
  newConfig,
  Opener,
  parseConfig,
  readKeyFile,
  RepoKeys,
  SEAL_OVERHEAD,
  Sealer,
  unlock,
  verifyConfig,
  WrongKeyError,
} from '../../src/crypto/index.js'
import { argon2id } from '../../src/crypto/argon2.js'
import { hchacha20, xchachaOpen, xchachaSeal } from '../../src/crypto/xchacha.js'
import { nativeAddon } from '../../src/util/native.js'
import { tempDir } from '../helpers/stores.js'

describe('AEAD', () => {
  const key = randomBytes(32)

  it('round-trips and binds the associated data', () => {
    const sealer = new Sealer(key)
    const opener = new Opener(key)
    const sealed = sealer.seal(Buffer.from('hello world'), 'blob:1')
    expect(opener.open(sealed, 'blob:1').toString()).toBe('hello world')
    expect(() => opener.open(sealed, 'blob:2')).toThrow(DecryptError)
    expect(() => new Opener(randomBytes(32)).open(sealed, 'blob:1')).toThrow(DecryptError)
  })

  it('seals into a buffer the caller provides, of exactly the sealed size', () => {
    const sealer = new Sealer(key)
    const parts = [Buffer.from('hello '), Buffer.from('world')]
    const into = Buffer.alloc(SEAL_OVERHEAD + 11 + 8, 0xaa)
    const sealed = sealer.seal(parts, 'frame:1', into.subarray(4, 4 + SEAL_OVERHEAD + 11))
    expect(sealed.buffer).toBe(into.buffer)
    expect(new Opener(key).open(into.subarray(4, 4 + SEAL_OVERHEAD + 11), 'frame:1').toString()).toBe('hello world')
    expect(into.subarray(0, 4).every((b) => b === 0xaa) && into.subarray(4 + SEAL_OVERHEAD + 11).every((b) => b === 0xaa)).toBe(true)
    expect(() => sealer.seal(parts, 'frame:1', Buffer.alloc(SEAL_OVERHEAD + 10))).toThrow(RangeError)
  })

  it('detects a flip of any single byte', () => {
    const sealer = new Sealer(key)
    const opener = new Opener(key)
    const sealed = sealer.seal(randomBytes(100), 'x')
    for (let i = 0; i < sealed.length; i++) {
      const copy = Buffer.from(sealed)
      copy[i] ^= 0x01
      expect(() => opener.open(copy, 'x'), `byte ${i}`).toThrow(DecryptError)
    }
    expect(() => opener.open(sealed.subarray(0, sealed.length - 1), 'x')).toThrow(DecryptError)
  })

  it('seals with the native addon exactly what node:crypto opens, and opens what node:crypto sealed', () => {
    // CI builds the addon; without it Sealer and Opener are node:crypto and this would prove nothing.
    expect(nativeAddon()?.gcmSeal).toBeTypeOf('function')
    const aad = Buffer.from('wal:v:1:99')
    const sealer = new Sealer(key)
    for (const size of [0, 1, 4096, 100_000]) {
      const parts = [randomBytes(13), randomBytes(size), Buffer.alloc(0)]
      const sealed = sealer.seal(parts, aad)
      const sessionKey = createHmac('sha256', key).update(sealed.subarray(1, 17)).digest()
      const nonce = sealed.subarray(17, 29)
      const decipher = createDecipheriv('aes-256-gcm', sessionKey, nonce)
      decipher.setAAD(aad)
      decipher.setAuthTag(sealed.subarray(sealed.length - 16))
      const plain = Buffer.concat([decipher.update(sealed.subarray(29, sealed.length - 16)), decipher.final()])
      expect(plain.equals(Buffer.concat(parts)), `${size} bytes`).toBe(true)

      const cipher = createCipheriv('aes-256-gcm', sessionKey, nonce)
      cipher.setAAD(aad)
      const body = Buffer.concat([cipher.update(plain), cipher.final()])
      const foreign = Buffer.concat([sealed.subarray(0, 29), body, cipher.getAuthTag()])
      expect(new Opener(key).open(foreign, aad).equals(plain)).toBe(true)
    }
  })

  it('opens in place: the plaintext over the ciphertext, and a failed check throws', () => {
    expect(nativeAddon()?.gcmOpen).toBeTypeOf('function')
    const sealer = new Sealer(key)
    const opener = new Opener(key)
    const plain = randomBytes(100_000)
    const sealed = sealer.seal(plain, 'blob:1')
    const opened = opener.open(sealed, 'blob:1', 'blob', true)
    expect(opened.equals(plain)).toBe(true)
    expect(opened.buffer).toBe(sealed.buffer) // a view of the sealed bytes, not a new buffer
    const damaged = sealer.seal(plain, 'blob:2')
    damaged[damaged.length - 1] ^= 1
    expect(() => opener.open(damaged, 'blob:2', 'blob', true)).toThrow(DecryptError)
  })

  it('never repeats a nonce: counters within a sealer, fresh salts across sealers', () => {
    const a = new Sealer(key)
    const b = new Sealer(key)
    const seen = new Set<string>()
    for (const s of [a, b]) {
      for (let i = 0; i < 1000; i++) {
        const sealed = s.seal(Buffer.alloc(0), '')
        const saltAndNonce = sealed.subarray(1, 1 + 16 + 12).toString('hex')
        expect(seen.has(saltAndNonce)).toBe(false)
        seen.add(saltAndNonce)
      }
    }
  })
})

/** libsodium itself, as the reference the project's own code must agree with. */
async function sodium(): Promise<typeof import('libsodium-wrappers-sumo')> {
  const lib = createRequire(import.meta.url)('libsodium-wrappers-sumo') as typeof import('libsodium-wrappers-sumo')
  await lib.ready
  return lib
}

describe('XChaCha20-Poly1305 for key slots', () => {
  it('HChaCha20 matches the test vector of draft-irtf-cfrg-xchacha §2.2.1', () => {
    const key = Buffer.from(Array.from({ length: 32 }, (_, i) => i))
    const nonce = Buffer.from('000000090000004a0000000031415927', 'hex')
    expect(hchacha20(key, nonce).toString('hex')).toBe('82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc')
  })

  it('seals and opens exactly as libsodium does, and rejects any change', async () => {
    const na = await sodium()
    for (const size of [0, 1, 32, 1000]) {
      const key = randomBytes(32)
      const nonce = randomBytes(24)
      const msg = randomBytes(size)
      const ad = randomBytes(40)
      const ours = xchachaSeal(msg, ad, nonce, key)
      expect(ours).toEqual(Buffer.from(na.crypto_aead_xchacha20poly1305_ietf_encrypt(msg, ad, null, nonce, key)))
      expect(xchachaOpen(ours, ad, nonce, key)).toEqual(msg)
      const flipped = Buffer.from(ours)
      flipped[0] ^= 1
      expect(() => xchachaOpen(flipped, ad, nonce, key)).toThrow()
      expect(() => xchachaOpen(ours, randomBytes(40), nonce, key)).toThrow()
      expect(() => xchachaOpen(ours, ad, nonce, randomBytes(32))).toThrow()
    }
  })
})

describe('Argon2id in a worker thread', () => {
  it('derives exactly what libsodium derives in-thread, and differs per salt and passphrase', async () => {
    const na = await sodium()
    const salt = randomBytes(16)
    const mem = 8 * 1024 * 1024
    const inThread = Buffer.from(na.crypto_pwhash(32, Buffer.from('correct horse'), salt, 2, mem, na.crypto_pwhash_ALG_ARGON2ID13))
    expect(Buffer.from(await argon2id(Buffer.from('correct horse'), salt, 2, mem))).toEqual(inThread)
    expect(Buffer.from(await argon2id(Buffer.from('correct horsf'), salt, 2, mem))).not.toEqual(inThread)
    expect(Buffer.from(await argon2id(Buffer.from('correct horse'), randomBytes(16), 2, mem))).not.toEqual(inThread)
  })

  it('reports bad parameters as an error instead of hanging', async () => {
    await expect(argon2id(Buffer.from('x'), Buffer.alloc(3), 2, 8 * 1024 * 1024)).rejects.toThrow(/Argon2id failed/)
  })
})

describe('repository keys and key slots', () => {
  it('derives independent subkeys and keyed content IDs', () => {
    const keys = new RepoKeys(randomBytes(32), 'repo')
    expect(keys.key('data').equals(keys.key('meta'))).toBe(false)
    const other = new RepoKeys(randomBytes(32), 'repo')
    const data = Buffer.from('same content')
    expect(keys.contentId(data).equals(keys.contentId(data))).toBe(true)
    // Content IDs are keyed: another repository cannot confirm that we store a known file.
    expect(keys.contentId(data).equals(other.contentId(data))).toBe(false)
    expect(keys.nameKey('volume', 'a')).not.toBe(keys.nameKey('volume', 'b'))
  })

  it('opens with any slot, refuses a wrong passphrase or key file, and never re-encrypts on slot changes', async () => {
    const config = newConfig({ conditionalWrites: true, backend: 'memory' })
    const master = randomBytes(32)
    await addSlot(config, master, { kind: 'passphrase', passphrase: 'correct horse' })
    const keyFile = randomBytes(32)
    await addSlot(config, master, { kind: 'keyfile', key: keyFile })
    expect((await unlock(config, { kind: 'passphrase', passphrase: 'correct horse' })).master.equals(master)).toBe(true)
    expect((await unlock(config, { kind: 'keyfile', key: keyFile })).master.equals(master)).toBe(true)
    await expect(unlock(config, { kind: 'passphrase', passphrase: 'wrong' })).rejects.toThrow(WrongKeyError)
    await expect(unlock(config, { kind: 'keyfile', key: randomBytes(32) })).rejects.toThrow(/wrong key file/)
  })

  it('detects any change to the config body through its MAC', async () => {
    const config = newConfig({ conditionalWrites: true, backend: 'memory' })
    const master = randomBytes(32)
    await addSlot(config, master, { kind: 'passphrase', passphrase: 'pw' })
    const keys = new RepoKeys(master, config.id)
    const encoded = encodeConfig(config, keys)
    verifyConfig(parseConfig(encoded, 'test'), keys, 'test')
    const tampered = parseConfig(encoded, 'test')
    tampered.storage.conditionalWrites = false
    expect(() => verifyConfig(tampered, keys, 'test')).toThrow(/MAC mismatch/)
    const future = JSON.parse(encoded.toString())
    future.version = 99
    expect(() => parseConfig(Buffer.from(JSON.stringify(future)), 'test')).toThrow(/format version 99/)
    expect(() => parseConfig(Buffer.from('{"format":"something-else"}'), 'test')).toThrow(/not an s0fs repository/)
  })

  it('creates key files 0600 and refuses group- or world-readable ones', async () => {
    const { dir, cleanup } = tempDir('s0fs-key')
    try {
      const file = path.join(dir, 'sub', 'key')
      const key = await createKeyFile(file)
      expect(statSync(file).mode & 0o777).toBe(0o600)
      expect((await readKeyFile(file)).equals(key)).toBe(true)
      await expect(createKeyFile(file)).rejects.toThrow(/already exists/)
      chmodSync(file, 0o644)
      await expect(readKeyFile(file)).rejects.toThrow(/chmod 600/)
      const b64 = path.join(dir, 'b64')
      writeFileSync(b64, key.toString('base64') + '\n', { mode: 0o600 })
      expect((await readKeyFile(b64)).equals(key)).toBe(true)
      const short = path.join(dir, 'short')
      writeFileSync(short, 'abc', { mode: 0o600 })
      await expect(readKeyFile(short)).rejects.toThrow(/must hold 32 bytes/)
    } finally {
      cleanup()
    }
  })
})
