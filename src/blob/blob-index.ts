import type { BlobRef } from './segment.js'

/**
 * Which segment holds which blob, for every blob the repository knows: the
 * deduplication index. Compact on purpose — rows in typed arrays, segment
 * IDs interned, and an open-addressing hash table of row numbers instead of
 * a Map keyed by strings — at about 60 bytes per blob (a Map of objects
 * costs ~320), so a writer with a million blobs stays near 60 MB.
 */
export class BlobIndex {
  /** Hash table: row + 1 per slot, 0 for empty; IDs are keyed hashes, so their first bytes are uniform. */
  private slots = new Int32Array(1024)
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
    const row = this.find(id)
    return row < 0 ? undefined : this.ref(row)
  }

  has(id: Buffer): boolean {
    return this.find(id) >= 0
  }

  set(ref: BlobRef): void {
    let row = this.find(ref.id)
    if (row < 0) {
      if (this.count === this.capacity) this.grow()
      row = this.count++
      ref.id.copy(this.ids, row * 32, 0, 32)
      this.insert(row)
    }
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
    this.slots.fill(0)
    this.count = 0
  }

  /** The row holding `id`, or -1. */
  private find(id: Buffer): number {
    const mask = this.slots.length - 1
    for (let slot = id.readUInt32LE(0) & mask; ; slot = (slot + 1) & mask) {
      const entry = this.slots[slot]
      if (entry === 0) return -1
      const row = entry - 1
      if (this.ids.compare(id, 0, 32, row * 32, row * 32 + 32) === 0) return row
    }
  }

  /** Adds row (already counted) to the hash table. */
  private insert(row: number): void {
    // Keep the table at most half full, so probe runs stay short.
    if (this.count * 2 <= this.slots.length) return this.place(row)
    this.slots = new Int32Array(this.slots.length * 2)
    for (let r = 0; r < this.count; r++) this.place(r)
  }

  private place(row: number): void {
    const mask = this.slots.length - 1
    let slot = this.ids.readUInt32LE(row * 32) & mask
    while (this.slots[slot] !== 0) slot = (slot + 1) & mask
    this.slots[slot] = row + 1
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

function extend<T extends Uint32Array | Float64Array>(old: T, next: T): T {
  next.set(old as never)
  return next
}
