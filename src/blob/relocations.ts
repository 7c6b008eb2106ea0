import { randomBytes } from 'node:crypto'
import { pack, unpack } from 'msgpackr'
import type { RepoKeys } from '../crypto/index.js'
import { listAll, type ObjectStore } from '../store/index.js'
import type { BlobRef } from './segment.js'

/**
 * Where repacked blobs went. Trees address a blob by segment and offset, so
 * when GC copies the live blobs of a mostly dead segment into a new one it
 * does not rewrite every tree (which would unshare the pages snapshots and
 * forks have in common); it records the move here, and readers translate.
 * A sealed blob is bound to its content ID, not to its segment, so it is
 * copied byte for byte. GC keeps only entries some tree still uses.
 *
 * Objects: reloc/<id>, each a sealed list of [old segment, blob ID, new
 * segment, offset, length, raw length].
 */

export const RELOC_PREFIX = 'reloc/'
const MAX_CHAIN = 64

type Row = [string, Uint8Array, string, number, number, number]

function relocAad(id: string): string {
  return `reloc:${id}`
}

export class Relocations {
  private map = new Map<string, BlobRef>()

  static keyOf(seg: string, id: Buffer): string {
    return `${seg}:${id.toString('hex')}`
  }

  get size(): number {
    return this.map.size
  }

  /** The blob's current location (following moves of moves). */
  translate(ref: BlobRef): BlobRef {
    let at = ref
    for (let i = 0; i < MAX_CHAIN; i++) {
      const next = this.map.get(Relocations.keyOf(at.seg, at.id))
      if (!next) return at
      at = next
    }
    return at
  }

  add(from: BlobRef, to: BlobRef): void {
    this.map.set(Relocations.keyOf(from.seg, from.id), to)
  }

  /** Entries (old location → final location) whose old location is in `used`. */
  compacted(used: Set<string>): [string, Buffer, BlobRef][] {
    const out: [string, Buffer, BlobRef][] = []
    for (const [key, to] of this.map) {
      if (!used.has(key)) continue
      const [seg, idHex] = key.split(':')
      const id = Buffer.from(idHex, 'hex')
      out.push([seg, id, this.translate({ id, seg, off: 0, len: 0, raw: 0 })])
    }
    return out
  }

  /** Replaces what is known with every relocation object in the bucket; returns their keys. */
  async load(store: ObjectStore, keys: RepoKeys): Promise<string[]> {
    const map = new Map<string, BlobRef>()
    const objects: string[] = []
    for await (const obj of listAll(store, RELOC_PREFIX)) {
      const id = obj.key.slice(RELOC_PREFIX.length)
      const rows = unpack(keys.open('data', await store.get(obj.key), relocAad(id), `relocations ${id}`)) as Row[]
      for (const [seg, rawId, newSeg, off, len, raw] of rows) {
        const blobId = Buffer.from(rawId)
        map.set(Relocations.keyOf(seg, blobId), { id: blobId, seg: newSeg, off, len, raw })
      }
      objects.push(obj.key)
    }
    this.map = map
    return objects
  }

  /** Writes `entries` as one new relocation object; returns its key (nothing when empty). */
  static async write(store: ObjectStore, keys: RepoKeys, entries: [string, Buffer, BlobRef][]): Promise<string | undefined> {
    if (entries.length === 0) return undefined
    const id = randomBytes(16).toString('hex')
    const rows: Row[] = entries.map(([seg, blobId, to]) => [seg, blobId, to.seg, to.off, to.len, to.raw])
    const key = `${RELOC_PREFIX}${id}`
    await store.put(key, keys.seal('data', pack(rows), relocAad(id)))
    return key
  }
}
