import { createHmac, randomBytes } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import { Packr } from 'msgpackr'
import { Compressor, Decompressor } from 'zstd-napi'
import type { RepoKeys } from '../crypto/index.js'
import type { ObjectStore } from '../store/index.js'
import { isPageRef, newBranch, newLeaf, type Child, type Node, type PageRef } from './node.js'

/**
 * Persisted pages. A page is msgpack(node) compressed with zstd and sealed
 * under the metadata key; its ID is a keyed hash of the plaintext and is bound
 * into the associated data, so a page swapped with another fails to open.
 * All pages written by one commit go into one pack object (one PUT), and a
 * page is fetched back with one ranged GET.
 */

const packr = new Packr({ useRecords: false, variableMapSize: true })
const PAGE_ID_BYTES = 16

let compressor: Compressor | undefined
let decompressor: Decompressor | undefined

export class PageCorruptError extends Error {
  constructor(readonly ref: PageRef, detail: string) {
    super(`metadata page ${ref.id.toString('hex')} (pack ${ref.pack} @${ref.off}+${ref.len}): ${detail}`)
    this.name = 'PageCorruptError'
  }
}

export function packKey(pack: string): string {
  return `meta/${pack.slice(0, 2)}/${pack}`
}

export function pageAad(id: Buffer): string {
  return `page:${id.toString('hex')}`
}

function encodeRef(ref: PageRef): [Buffer, number, number, Buffer] {
  return [Buffer.from(ref.pack, 'hex'), ref.off, ref.len, ref.id]
}

function decodeRef(raw: [Uint8Array, number, number, Uint8Array]): PageRef {
  return { pack: Buffer.from(raw[0]).toString('hex'), off: raw[1], len: raw[2], id: Buffer.from(raw[3]) }
}

export function encodeNode(node: Node): Buffer {
  const keys = node.keys.map((k) => Buffer.from(k, 'latin1'))
  if (node.leaf) return packr.pack([1, keys, node.vals])
  const refs = node.children.map((c) => {
    const ref = isPageRef(c) ? c : c.ref
    if (!ref) throw new Error('cannot encode a branch whose children are not persisted')
    return encodeRef(ref)
  })
  return packr.pack([0, keys, refs])
}

export function decodeNode(plain: Buffer, ref: PageRef): Node {
  let raw: [number, Uint8Array[], unknown[]]
  try {
    raw = packr.unpack(plain)
  } catch (err) {
    throw new PageCorruptError(ref, `undecodable: ${(err as Error).message}`)
  }
  const keys = raw[1].map((k) => Buffer.from(k.buffer, k.byteOffset, k.byteLength).toString('latin1'))
  const node =
    raw[0] === 1
      ? newLeaf(-1, keys, (raw[2] as Uint8Array[]).map((v) => Buffer.from(v.buffer, v.byteOffset, v.byteLength)))
      : newBranch(-1, keys, (raw[2] as [Uint8Array, number, number, Uint8Array][]).map(decodeRef))
  node.ref = ref
  return node
}

/** Builds one pack object from the pages of a commit. */
export class PackWriter {
  readonly id = randomBytes(16).toString('hex')
  private readonly parts: Buffer[] = []
  private size = 0

  constructor(private readonly keys: RepoKeys) {}

  get byteLength(): number {
    return this.size
  }
  get pageCount(): number {
    return this.parts.length
  }

  add(node: Node): PageRef {
    const plain = encodeNode(node)
    const id = createHmac('sha256', this.keys.key('meta')).update(plain).digest().subarray(0, PAGE_ID_BYTES)
    if (!compressor) {
      compressor = new Compressor()
      compressor.setParameters({ compressionLevel: 3 })
    }
    const sealed = this.keys.seal('meta', compressor.compress(plain), pageAad(id))
    const ref: PageRef = { pack: this.id, off: this.size, len: sealed.length, id }
    this.parts.push(sealed)
    this.size += sealed.length
    return ref
  }

  finish(): Buffer {
    return Buffer.concat(this.parts)
  }
}

export interface PageCacheStats {
  hits: number
  misses: number
  loads: number
}

/** Loads pages lazily and keeps decoded ones in a byte-bounded LRU cache. */
export class PageStore {
  readonly stats: PageCacheStats = { hits: 0, misses: 0, loads: 0 }
  private readonly cache: LRUCache<string, Node>
  private readonly inflight = new Map<string, Promise<Node>>()

  constructor(
    readonly store: ObjectStore,
    readonly keys: RepoKeys,
    cacheBytes = 32 * 1024 * 1024,
  ) {
    this.cache = new LRUCache<string, Node>({ maxSize: cacheBytes, sizeCalculation: (n) => Math.max(64, n.bytes) })
  }

  /** A cached page, or undefined (no I/O). */
  peek(ref: PageRef): Node | undefined {
    const node = this.cache.get(cacheKey(ref))
    if (node) this.stats.hits++
    return node
  }

  async load(ref: PageRef): Promise<Node> {
    const key = cacheKey(ref)
    const hit = this.cache.get(key)
    if (hit) {
      this.stats.hits++
      return hit
    }
    this.stats.misses++
    let pending = this.inflight.get(key)
    if (!pending) {
      pending = this.fetch(ref).finally(() => this.inflight.delete(key))
      this.inflight.set(key, pending)
    }
    return pending
  }

  /** Resolves a child to its node, loading it if it is only a reference. */
  resolve(child: Child): Node | Promise<Node> {
    if (!isPageRef(child)) return child
    return this.peek(child) ?? this.load(child)
  }

  /** Makes a just-persisted node available to later loads without a GET. */
  remember(node: Node): void {
    if (node.ref) this.cache.set(cacheKey(node.ref), node)
  }

  private async fetch(ref: PageRef): Promise<Node> {
    this.stats.loads++
    const sealed = await this.store.get(packKey(ref.pack), { start: ref.off, end: ref.off + ref.len })
    if (sealed.length !== ref.len) throw new PageCorruptError(ref, `read ${sealed.length} of ${ref.len} bytes (pack truncated?)`)
    let plain: Buffer
    try {
      const compressed = this.keys.open('meta', sealed, pageAad(ref.id), `metadata page ${ref.id.toString('hex')}`)
      decompressor ??= new Decompressor()
      plain = decompressor.decompress(compressed)
    } catch (err) {
      throw new PageCorruptError(ref, (err as Error).message)
    }
    const node = decodeNode(plain, ref)
    this.cache.set(cacheKey(ref), node)
    return node
  }
}

function cacheKey(ref: PageRef): string {
  return `${ref.pack}:${ref.off}`
}
