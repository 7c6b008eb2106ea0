import type { BlobRef } from './segment.js'

/**
 * Which segment holds which blob, for every blob the repository knows: the
 * deduplication index. Compact on purpose — rows in typed arrays, segment
 * IDs interned — at about 110 bytes per blob instead of ~320 for a Map of
 * objects, so a writer with a million blobs stays near 110 MB.
 */
export class BlobIndex {
  private readonly rows = new Map<string, number>()
  private readonly segments: string[] = []
  private readonly segmentRows = new Map<string, number>()
  private capacity = 0
  private count = 0
  private ids = Buffer.alloc(0)
  private seg = new Uint32Array(0)
  private off = new Float64Array(0)
  private len = new Uint32Array(0)
  private raw = new Uint32Array(0)

  get size(): number {
    return this.count
  }

  get(id: Buffer): BlobRef | undefined {
    const row = this.rows.get(key(id))
    return row === undefined ? undefined : this.ref(row)
  }

  has(id: Buffer): boolean {
    return this.rows.has(key(id))
  }

  set(ref: BlobRef): void {
    const k = key(ref.id)
    let row = this.rows.get(k)
    if (row === undefined) {
      if (this.count === this.capacity) this.grow()
      row = this.count++
      this.rows.set(k, row)
    }
    ref.id.copy(this.ids, row * 32)
    let segRow = this.segmentRows.get(ref.seg)
    if (segRow === undefined) {
      segRow = this.segments.length
      this.segments.push(ref.seg)
      this.segmentRows.set(ref.seg, segRow)
    }
    this.seg[row] = segRow
    this.off[row] = ref.off
    this.len[row] = ref.len
    this.raw[row] = ref.raw
  }

  clear(): void {
    this.rows.clear()
    this.count = 0
  }

  *values(): Generator<BlobRef> {
    for (let row = 0; row < this.count; row++) yield this.ref(row)
  }

  private ref(row: number): BlobRef {
    return {
      id: Buffer.from(this.ids.subarray(row * 32, row * 32 + 32)),
      seg: this.segments[this.seg[row]],
      off: this.off[row],
      len: this.len[row],
      raw: this.raw[row],
    }
  }

  private grow(): void {
    const next = Math.max(1024, this.capacity * 2)
    const ids = Buffer.alloc(next * 32)
    this.ids.copy(ids)
    this.ids = ids
    this.seg = extend(this.seg, new Uint32Array(next))
    this.off = extend(this.off, new Float64Array(next))
    this.len = extend(this.len, new Uint32Array(next))
    this.raw = extend(this.raw, new Uint32Array(next))
    this.capacity = next
  }
}

/** The first 16 bytes of a keyed 256-bit content ID identify it (collisions ~2^-64 at 2^32 blobs). */
function key(id: Buffer): string {
  return id.toString('latin1', 0, 16)
}

function extend<T extends Uint32Array | Float64Array>(old: T, next: T): T {
  next.set(old as never)
  return next
}
