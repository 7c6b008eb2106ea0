import { createCipheriv, createDecipheriv } from 'node:crypto'

/**
 * XChaCha20-Poly1305 (IETF), byte-compatible with libsodium's
 * crypto_aead_xchacha20poly1305_ietf_*: HChaCha20 derives a subkey from the
 * key and the first 16 nonce bytes, then OpenSSL's ChaCha20-Poly1305 runs
 * with the last 8 nonce bytes. Key slots use it (a random 24-byte nonce is
 * safe without a counter).
 *
 * Why not libsodium here: its WASM instance costs ~13 MiB of resident memory
 * for the life of the process, and a mount daemon only needs this once, to
 * unwrap its key. libsodium stays the reference in the tests.
 */

export const XCHACHA_NONCE_BYTES = 24
const TAG_BYTES = 16

/** HChaCha20 (draft-irtf-cfrg-xchacha §2.2): the ChaCha20 block function without the final addition. */
export function hchacha20(key: Uint8Array, nonce16: Uint8Array): Buffer {
  const k = Buffer.from(key.buffer, key.byteOffset, key.byteLength)
  const n = Buffer.from(nonce16.buffer, nonce16.byteOffset, nonce16.byteLength)
  if (k.length !== 32 || n.length !== 16) throw new RangeError('hchacha20: key must be 32 bytes and nonce 16')
  const s = new Uint32Array(16)
  s[0] = 0x61707865
  s[1] = 0x3320646e
  s[2] = 0x79622d32
  s[3] = 0x6b206574
  for (let i = 0; i < 8; i++) s[4 + i] = k.readUInt32LE(i * 4)
  for (let i = 0; i < 4; i++) s[12 + i] = n.readUInt32LE(i * 4)
  const quarter = (a: number, b: number, c: number, d: number) => {
    s[a] += s[b]
    s[d] = rotl(s[d] ^ s[a], 16)
    s[c] += s[d]
    s[b] = rotl(s[b] ^ s[c], 12)
    s[a] += s[b]
    s[d] = rotl(s[d] ^ s[a], 8)
    s[c] += s[d]
    s[b] = rotl(s[b] ^ s[c], 7)
  }
  for (let round = 0; round < 10; round++) {
    quarter(0, 4, 8, 12)
    quarter(1, 5, 9, 13)
    quarter(2, 6, 10, 14)
    quarter(3, 7, 11, 15)
    quarter(0, 5, 10, 15)
    quarter(1, 6, 11, 12)
    quarter(2, 7, 8, 13)
    quarter(3, 4, 9, 14)
  }
  const out = Buffer.alloc(32)
  for (let i = 0; i < 4; i++) out.writeUInt32LE(s[i], i * 4)
  for (let i = 0; i < 4; i++) out.writeUInt32LE(s[12 + i], 16 + i * 4)
  return out
}

function rotl(x: number, n: number): number {
  return ((x << n) | (x >>> (32 - n))) >>> 0
}

function subkeyAndNonce(key: Uint8Array, nonce: Uint8Array): { subkey: Buffer; iv: Buffer } {
  if (nonce.length !== XCHACHA_NONCE_BYTES) throw new RangeError(`xchacha20poly1305: nonce must be ${XCHACHA_NONCE_BYTES} bytes`)
  const iv = Buffer.alloc(12)
  iv.set(nonce.subarray(16), 4)
  return { subkey: hchacha20(key, nonce.subarray(0, 16)), iv }
}

/** ciphertext ‖ tag, as libsodium returns it. */
export function xchachaSeal(plaintext: Uint8Array, ad: Uint8Array, nonce: Uint8Array, key: Uint8Array): Buffer {
  const { subkey, iv } = subkeyAndNonce(key, nonce)
  const cipher = createCipheriv('chacha20-poly1305', subkey, iv, { authTagLength: TAG_BYTES })
  cipher.setAAD(ad, { plaintextLength: plaintext.length })
  return Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()])
}

/** The plaintext, or an exception when the tag does not verify (wrong key, nonce, AD or bytes). */
export function xchachaOpen(sealed: Uint8Array, ad: Uint8Array, nonce: Uint8Array, key: Uint8Array): Buffer {
  if (sealed.length < TAG_BYTES) throw new Error('xchacha20poly1305: ciphertext shorter than its tag')
  const { subkey, iv } = subkeyAndNonce(key, nonce)
  const body = sealed.subarray(0, sealed.length - TAG_BYTES)
  const decipher = createDecipheriv('chacha20-poly1305', subkey, iv, { authTagLength: TAG_BYTES })
  decipher.setAAD(ad, { plaintextLength: body.length })
  decipher.setAuthTag(sealed.subarray(sealed.length - TAG_BYTES))
  return Buffer.concat([decipher.update(body), decipher.final()])
}
