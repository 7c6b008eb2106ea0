import type { WalLocation } from '../portal/wal.js'

/**
 * Written-but-not-yet-stored bytes of one file: non-overlapping pieces, each
 * pointing into a write record of the log. Reads layer these over the file's
 * extents; the flusher turns them into blobs. A later write replaces the
 * overlapped parts of earlier pieces.
 *
 * The pieces are kept sorted in blocks of at most BLOCK_MAX: random 4 KiB
 * writes to a large file leave tens of thousands of pieces, and one sorted
 * array moved all of them on every write (a quarter of the daemon's time
 * under fio's random writes); a block moves at most BLOCK_MAX.
 */

export interface Piece {
  start: number
  end: number
  /** The log record holding the bytes, and where this piece's first byte sits in its payload. */
  loc: WalLocation
  srcOff: number
}

export interface PieceListener {
  added(piece: Piece): void
  removed(piece: Piece): void
}

const BLOCK_MAX = 512

const UNHEARD: PieceListener = { added: () => undefined, removed: () => undefined }

/** A position in the blocks: block index and index within it. */
interface At {
  b: number
  i: number
}

export class Overlay {
  /** Sorted by start, non-overlapping; every block non-empty and at most BLOCK_MAX long. */
  private blocks: Piece[][] = []
  private count = 0

  constructor(private readonly listener: PieceListener = UNHEARD) {}

  /** An independent copy sharing the (immutable) pieces; its changes notify no one. */
  copy(): Overlay {
    const copy = new Overlay()
    copy.blocks = this.blocks.map((block) => block.slice())
    copy.count = this.count
    return copy
  }

  get isEmpty(): boolean {
    return this.count === 0
  }

  /** Every piece in order (a copy). */
  get pieces(): Piece[] {
    return this.blocks.flat()
  }

  get bytes(): number {
    let n = 0
    for (const block of this.blocks) for (const p of block) n += p.end - p.start
    return n
  }

  get maxSeq(): number {
    let m = 0
    for (const block of this.blocks) for (const p of block) if (p.loc.seq > m) m = p.loc.seq
    return m
  }

  /** Records that [start, end) now holds the record's bytes from `srcOff` on. */
  insert(start: number, end: number, loc: WalLocation, srcOff: number): void {
    if (end <= start) return
    this.remove(start, end)
    const piece: Piece = { start, end, loc, srcOff }
    const at = this.firstEndingAfter(start)
    if (this.blocks.length === 0) this.blocks.push([piece])
    else if (at.b === this.blocks.length) this.blocks[at.b - 1].push(piece)
    else this.blocks[at.b].splice(at.i, 0, piece)
    this.count++
    this.split(Math.min(at.b, this.blocks.length - 1))
    this.listener.added(piece)
  }

  /** Drops [start, end) (punch, truncate). */
  remove(start: number, end: number): void {
    let { b, i } = this.firstEndingAfter(start)
    while (b < this.blocks.length) {
      const block = this.blocks[b]
      let j = i
      const replacement: Piece[] = []
      for (; j < block.length && block[j].start < end; j++) {
        const p = block[j]
        if (p.start < start) replacement.push(this.slice(p, p.start, start))
        if (p.end > end) replacement.push(this.slice(p, end, p.end))
      }
      // Done here if the scan stopped at a piece starting at or after `end`, or cut the last piece there.
      const done = j < block.length || replacement.some((r) => r.start >= end)
      const removed = block.splice(i, j - i, ...replacement)
      this.count += replacement.length - removed.length
      for (const p of removed) this.listener.removed(p)
      if (done) {
        this.split(b) // a piece cut in two may have overfilled the block
        return
      }
      if (block.length === 0) this.blocks.splice(b, 1)
      else b++
      i = 0
    }
  }

  /** Removes everything at or beyond `size`. */
  truncate(size: number): void {
    this.remove(size, Number.MAX_SAFE_INTEGER)
  }

  /** Pieces intersecting [start, end), clipped to it. */
  covering(start: number, end: number): Piece[] {
    const out: Piece[] = []
    let { b, i } = this.firstEndingAfter(start)
    for (; b < this.blocks.length; b++, i = 0) {
      const block = this.blocks[b]
      for (; i < block.length; i++) {
        const p = block[i]
        if (p.start >= end) return out
        out.push({ start: Math.max(p.start, start), end: Math.min(p.end, end), loc: p.loc, srcOff: p.srcOff + Math.max(0, start - p.start) })
      }
    }
    return out
  }

  /**
   * Drops the pieces a flush stored: those inside one of `spans` (sorted by
   * start, disjoint) and no newer than its maxSeq, in one pass however many
   * spans there are (the flusher stores thousands of patches of a file at once).
   */
  removeStored(spans: { start: number; end: number; maxSeq: number }[]): void {
    const all = this.pieces
    // Where each piece stands: -1 outside every span (or newer), 1 stored; a piece a span cuts takes the general path.
    const verdicts = new Int8Array(all.length)
    let s = 0
    for (let i = 0; i < all.length; i++) {
      const p = all[i]
      while (s < spans.length && spans[s].end <= p.start) s++
      const span = spans[s]
      if (!span || span.start >= p.end || p.loc.seq > span.maxSeq) verdicts[i] = -1
      else if (span.start <= p.start && p.end <= span.end) verdicts[i] = 1
      else {
        // The flusher's spans never cut a piece; anyone else's may.
        for (const sp of spans) for (const c of this.covering(sp.start, sp.end)) if (c.loc.seq <= sp.maxSeq) this.remove(c.start, c.end)
        return
      }
    }
    const kept: Piece[] = []
    all.forEach((p, i) => (verdicts[i] === 1 ? this.listener.removed(p) : kept.push(p)))
    this.blocks = []
    for (let i = 0; i < kept.length; i += BLOCK_MAX / 2) this.blocks.push(kept.slice(i, i + BLOCK_MAX / 2))
    this.count = kept.length
  }

  clear(): void {
    for (const block of this.blocks) for (const p of block) this.listener.removed(p)
    this.blocks = []
    this.count = 0
  }

  private slice(p: Piece, start: number, end: number): Piece {
    const piece = { start, end, loc: p.loc, srcOff: p.srcOff + (start - p.start) }
    this.listener.added(piece)
    return piece
  }

  /** Halves a block that grew past BLOCK_MAX. */
  private split(b: number): void {
    const block = this.blocks[b]
    if (!block || block.length <= BLOCK_MAX) return
    this.blocks.splice(b + 1, 0, block.splice(block.length >> 1))
  }

  /** The first piece ending after `pos` (b = blocks.length when there is none). */
  private firstEndingAfter(pos: number): At {
    const blocks = this.blocks
    let lo = 0
    let hi = blocks.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      const block = blocks[mid]
      if (block[block.length - 1].end <= pos) lo = mid + 1
      else hi = mid
    }
    if (lo === blocks.length) return { b: lo, i: 0 }
    const block = blocks[lo]
    let l = 0
    let h = block.length
    while (l < h) {
      const mid = (l + h) >> 1
      if (block[mid].end <= pos) l = mid + 1
      else h = mid
    }
    return { b: lo, i: l }
  }
}
