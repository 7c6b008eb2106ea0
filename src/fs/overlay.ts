import type { WalLocation } from '../portal/wal.js'

/**
 * Written-but-not-yet-stored bytes of one file: non-overlapping pieces, each
 * pointing into a write record of the log. Reads layer these over the file's
 * extents; the flusher turns them into blobs. A later write replaces the
 * overlapped parts of earlier pieces.
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

export class Overlay {
  /** Sorted by start, non-overlapping. */
  pieces: Piece[] = []

  constructor(private readonly listener: PieceListener) {}

  get isEmpty(): boolean {
    return this.pieces.length === 0
  }

  get bytes(): number {
    let n = 0
    for (const p of this.pieces) n += p.end - p.start
    return n
  }

  get maxSeq(): number {
    let m = 0
    for (const p of this.pieces) if (p.loc.seq > m) m = p.loc.seq
    return m
  }

  /** Records that [start, end) now holds the record's bytes from `srcOff` on. */
  insert(start: number, end: number, loc: WalLocation, srcOff: number): void {
    if (end <= start) return
    const at = this.remove(start, end)
    const piece: Piece = { start, end, loc, srcOff }
    this.pieces.splice(at, 0, piece)
    this.listener.added(piece)
  }

  /** Drops [start, end) (punch, truncate); returns the index where that range was. */
  remove(start: number, end: number): number {
    const pieces = this.pieces
    let i = this.firstEndingAfter(start)
    const insertAt = i
    const replacement: Piece[] = []
    let j = i
    for (; j < pieces.length && pieces[j].start < end; j++) {
      const p = pieces[j]
      if (p.start < start) replacement.push(this.slice(p, p.start, start))
      if (p.end > end) replacement.push(this.slice(p, end, p.end))
    }
    const removed = pieces.splice(i, j - i, ...replacement)
    for (const p of removed) this.listener.removed(p)
    return insertAt + (replacement.length > 0 && replacement[0].start < start ? 1 : 0)
  }

  /** Removes everything at or beyond `size`. */
  truncate(size: number): void {
    this.remove(size, Number.MAX_SAFE_INTEGER)
  }

  /** Pieces intersecting [start, end), clipped to it. */
  covering(start: number, end: number): Piece[] {
    const out: Piece[] = []
    for (let i = this.firstEndingAfter(start); i < this.pieces.length && this.pieces[i].start < end; i++) {
      const p = this.pieces[i]
      out.push({ start: Math.max(p.start, start), end: Math.min(p.end, end), loc: p.loc, srcOff: p.srcOff + Math.max(0, start - p.start) })
    }
    return out
  }

  /** Drops the given pieces if they are still exactly as they were (used after a flush stored them). */
  removeIfUnchanged(flushed: Piece[]): boolean {
    for (const f of flushed) {
      const current = this.covering(f.start, f.end)
      if (current.length !== 1 || current[0].loc.seq !== f.loc.seq || current[0].srcOff !== f.srcOff || current[0].start !== f.start || current[0].end !== f.end) {
        return false
      }
    }
    for (const f of flushed) this.remove(f.start, f.end)
    return true
  }

  clear(): void {
    for (const p of this.pieces) this.listener.removed(p)
    this.pieces = []
  }

  private slice(p: Piece, start: number, end: number): Piece {
    const piece = { start, end, loc: p.loc, srcOff: p.srcOff + (start - p.start) }
    this.listener.added(piece)
    return piece
  }

  private firstEndingAfter(pos: number): number {
    let lo = 0
    let hi = this.pieces.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (this.pieces[mid].end <= pos) lo = mid + 1
      else hi = mid
    }
    return lo
  }
}
