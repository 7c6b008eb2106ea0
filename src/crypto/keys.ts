import { createHmac, hkdfSync, timingSafeEqual } from 'node:crypto'
import { Opener, Sealer } from './aead.js'

/** What each subkey is for; changing a label changes every derived key. */
const PURPOSES = ['data', 'meta', 'content-id', 'names', 'cache', 'chunker', 'config'] as const
export type KeyPurpose = (typeof PURPOSES)[number]

/**
 * The repository's key set. One random 32-byte master key (stored only wrapped
 * in the config's key slots) yields independent subkeys by HKDF-SHA256, so a
 * leak of one purpose's key reveals nothing about the others.
 */
export class RepoKeys {
  private readonly subkeys = new Map<KeyPurpose, Buffer>()
  private readonly sealers = new Map<KeyPurpose, Sealer>()
  private readonly openers = new Map<KeyPurpose, Opener>()

  constructor(readonly master: Buffer, readonly repoId: string) {
    if (master.length !== 32) throw new Error('master key must be 32 bytes')
    for (const purpose of PURPOSES) {
      this.subkeys.set(purpose, Buffer.from(hkdfSync('sha256', master, Buffer.from(repoId), `s0fs/v1/${purpose}`, 32)))
    }
  }

  key(purpose: KeyPurpose): Buffer {
    return this.subkeys.get(purpose)!
  }

  /** Encrypts under the purpose's key; `aad` names the object (kind + identity). */
  seal(purpose: KeyPurpose, plaintext: Buffer | Buffer[], aad: string | Buffer, into?: Buffer): Buffer {
    return this.sealer(purpose).seal(plaintext, aad, into)
  }

  /** The purpose's sealer (one per process and purpose; see Sealer.reserve). */
  sealer(purpose: KeyPurpose): Sealer {
    let sealer = this.sealers.get(purpose)
    if (!sealer) this.sealers.set(purpose, (sealer = new Sealer(this.key(purpose))))
    return sealer
  }

  /** Decrypts and checks sealed data; see Opener.open for `inPlace`. */
  open(purpose: KeyPurpose, sealed: Buffer, aad: string | Buffer, what?: string, inPlace = false): Buffer {
    let opener = this.openers.get(purpose)
    if (!opener) this.openers.set(purpose, (opener = new Opener(this.key(purpose))))
    return opener.open(sealed, aad, what ?? (typeof aad === 'string' ? aad : 'object'), inPlace)
  }

  /** Keyed content ID: HMAC-SHA256 of the plaintext, never a bare hash (no confirmation-of-file attacks). */
  contentId(data: Buffer): Buffer {
    return createHmac('sha256', this.key('content-id')).update(data).digest()
  }

  /** A name's opaque object-key component (volume and snapshot names never appear in the bucket). */
  nameKey(kind: string, name: string): string {
    return createHmac('sha256', this.key('names')).update(`${kind}\0${name}`).digest('hex').slice(0, 40)
  }

  /** MAC over the config body, so the plaintext config cannot be altered undetected. */
  configMac(body: string): string {
    return createHmac('sha256', this.key('config')).update(body).digest('base64')
  }

  verifyConfigMac(body: string, mac: string): boolean {
    const expected = Buffer.from(this.configMac(body), 'base64')
    const actual = Buffer.from(mac, 'base64')
    return expected.length === actual.length && timingSafeEqual(expected, actual)
  }
}
