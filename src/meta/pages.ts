import { createHmac, randomBytes } from 'node:crypto'
import { LRUCache } from 'lru-cache'
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

const PAGE_ID_BYTES = 16
const LEAF = 1
const BRANCH = 2

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

/**
 * Page plaintext, a flat layout so decoding makes no copies: every leaf value
 * is a view into the page's one buffer.
 *
 *   leaf:   01 | count | (keyLen key valLen val)*
 *   branch: 02 | count | (keyLen key pack[16] off len id[16])*
 * Integers are LEB128 varints.
 */
export function encodeNode(node: Node): Buffer {
  const w = new ByteWriter(node.bytes + 64)
  w.byte(node.leaf ? LEAF : BRANCH)
  w.varint(node.keys.length)
  for (let i = 0; i < node.keys.length; i++) {
    w.varint(node.keys[i].length)
    w.latin1(node.keys[i])
    if (node.leaf) {
      const v = node.vals[i]
      if (typeof v === 'number') {
        const spans = node.source!.spans
        w.varint(spans[2 * v + 1] - spans[2 * v])
        w.bytes(node.source!.plain, spans[2 * v], spans[2 * v + 1])
      } else {
        w.varint(v.length)
        w.bytes(v)
      }
    } else {
      const c = node.children[i]
      const ref = isPageRef(c) ? c : c.ref
      if (!ref) throw new Error('cannot encode a branch whose children are not persisted')
      w.bytes(Buffer.from(ref.pack, 'hex'))
      w.varint(ref.off)
      w.varint(ref.len)
      w.bytes(ref.id)
    }
  }
  return w.finish()
}

export function decodeNode(plain: Buffer, ref: PageRef): Node {
  const r = new ByteReader(plain, ref)
  const kind = r.byte()
  if (kind !== LEAF && kind !== BRANCH) throw new PageCorruptError(ref, `unknown page kind ${kind}`)
  const count = r.varint()
  const keys: string[] = new Array(count)
  const vals: number[] = []
  const spans = kind === LEAF ? new Uint32Array(2 * count) : undefined
  const children: Child[] = []
  for (let i = 0; i < count; i++) {
    keys[i] = r.latin1(r.varint())
    if (spans) {
      const len = r.varint()
      spans[2 * i] = r.position
      r.skip(len)
      spans[2 * i + 1] = r.position
      vals.push(i)
    } else {
      const pack = r.bytes(16).toString('hex')
      const off = r.varint()
      const len = r.varint()
      children.push({ pack, off, len, id: Buffer.from(r.bytes(PAGE_ID_BYTES)) })
    }
  }
  if (!r.done) throw new PageCorruptError(ref, 'trailing bytes')
  const node = spans ? newLeaf(-1, keys, vals, { plain, spans }) : newBranch(-1, keys, children)
  node.ref = ref
  node.memory = pageMemory(plain.byteLength, node)
  return node
}

/** What a decoded page costs in memory: its buffer, plus per entry a key string and slots (~70 B; a branch's refs more). */
function pageMemory(plainBytes: number, node: Node): number {
  return plainBytes + node.keys.length * (node.leaf ? 80 : 200)
}

class ByteWriter {
  private buf: Buffer
  private at = 0
  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(Math.max(64, size))
  }
  private room(n: number): void {
    if (this.at + n <= this.buf.length) return
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.at + n))
    this.buf.copy(next, 0, 0, this.at)
    this.buf = next
  }
  byte(b: number): void {
    this.room(1)
    this.buf[this.at++] = b
  }
  varint(n: number): void {
    this.room(10)
    while (n >= 0x80) {
      this.buf[this.at++] = (n % 0x80) | 0x80
      n = Math.floor(n / 0x80)
    }
    this.buf[this.at++] = n
  }
  latin1(s: string): void {
    this.room(s.length)
    this.at += this.buf.write(s, this.at, 'latin1')
  }
  bytes(b: Buffer, start = 0, end = b.length): void {
    this.room(end - start)
    b.copy(this.buf, this.at, start, end)
    this.at += end - start
  }
  finish(): Buffer {
    return this.buf.subarray(0, this.at)
  }
}

class ByteReader {
  private at = 0
  constructor(
    private readonly buf: Buffer,
    private readonly ref: PageRef,
  ) {}
  get done(): boolean {
    return this.at === this.buf.length
  }
  get position(): number {
    return this.at
  }
  skip(n: number): void {
    this.need(n)
    this.at += n
  }
  private need(n: number): void {
    if (this.at + n > this.buf.length) throw new PageCorruptError(this.ref, 'truncated page')
  }
  byte(): number {
    this.need(1)
    return this.buf[this.at++]
  }
  varint(): number {
    let n = 0
    let scale = 1
    for (;;) {
      const b = this.byte()
      n += (b & 0x7f) * scale
      if (b < 0x80) return n
      scale *= 0x80
      if (scale > 2 ** 56) throw new PageCorruptError(this.ref, 'bad varint')
    }
  }
  latin1(n: number): string {
    this.need(n)
    const s = this.buf.toString('latin1', this.at, this.at + n)
    this.at += n
    return s
  }
  bytes(n: number): Buffer {
    this.need(n)
    const b = this.buf.subarray(this.at, this.at + n)
    this.at += n
    return b
  }
}

/** Builds one pack object from the pages of a commit. */
export class PackWriter {
  readonly id = randomBytes(16).toString('hex')
  private readonly parts: Buffer[] = []
  private size = 0

  private remembered = 0

  /**
   * `rememberBytes`: how much decoded memory worth of plaintext to keep for
   * the page cache (the cache's capacity). Pages are added children first,
   * so what is kept is the top of the tree and the last leaves; keeping more
   * would only be evicted again, after doubling the commit's peak memory.
   */
  constructor(
    private readonly keys: RepoKeys,
    private readonly rememberBytes = Infinity,
  ) {}

  get byteLength(): number {
    return this.size
  }
  get pageCount(): number {
    return this.parts.length
  }

  /** Plaintext of each page added, by reference, for `PageStore.rememberWritten`. */
  readonly plains = new Map<Node, Buffer>()

  add(node: Node): PageRef {
    const plain = encodeNode(node)
    const id = createHmac('sha256', this.keys.key('meta')).update(plain).digest().subarray(0, PAGE_ID_BYTES)
    if (!compressor) {
      compressor = new Compressor()
      compressor.setParameters({ compressionLevel: 3 })
    }
    const sealed = this.keys.seal('meta', compressor.compress(plain), pageAad(id))
    const ref: PageRef = { pack: this.id, off: this.size, len: sealed.length, id }
    this.plains.set(node, plain)
    this.remembered += pageMemory(plain.byteLength, node)
    while (this.remembered > this.rememberBytes && this.plains.size > 1) {
      const [oldest, oldPlain] = this.plains.entries().next().value as [Node, Buffer]
      this.plains.delete(oldest)
      this.remembered -= pageMemory(oldPlain.byteLength, oldest)
    }
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
    cacheBytes = 12 * 1024 * 1024,
  ) {
    this.cache = new LRUCache<string, Node>({ maxSize: cacheBytes, sizeCalculation: (n) => Math.max(64, n.memory ?? n.bytes * 3) })
  }

  /** The cache's capacity in (estimated) bytes. */
  get capacity(): number {
    return this.cache.maxSize
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

  /**
   * Caches the pages of a pack just stored, decoded from their plaintext:
   * later loads need no GET, and the cached copies are compact (values are
   * views into one buffer per page, not the many small buffers a live node
   * accumulated).
   */
  rememberWritten(pack: PackWriter): void {
    for (const [node, plain] of pack.plains) {
      if (node.ref) this.cache.set(cacheKey(node.ref), decodeNode(plain, node.ref))
    }
    pack.plains.clear()
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
