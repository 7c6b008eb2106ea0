import { freeBuffer } from '../util/native.js'

/**
 * Frees the native encoder's arenas — one buffer holding a batch's sealed
 * blobs — as soon as nothing can read them: when every segment holding one
 * of their blobs is stored, or at once when none does (all duplicates or
 * zeros). Left to V8, they were freed only when it next collected, which it
 * does on account of memory outside its heap after 64 MiB more of it: a
 * flush of tens of MiB carried all of it as garbage, and the mount daemon's
 * resident set grew by as much (docs/performance.md, "Freeing a flush's
 * buffers when it is done with them").
 *
 * Safe to free then: a segment's bytes are read only synchronously
 * (BlobStore.pendingBytes, then decrypted into a buffer of the reader's
 * own), and a store keeps no reference once its put settles. A view of a
 * freed arena reads as empty, never as freed memory.
 */
export class Arenas {
  /** Arena → how many unstored segments hold blobs of it. */
  private readonly holds = new Map<Buffer, number>()
  private readonly bySegment = new Map<string, Set<Buffer>>()

  constructor(private readonly free: (arena: Buffer) => void = freeBuffer) {}

  /** Segment `seg` now holds a blob of `arena`. */
  hold(seg: string, arena: Buffer): void {
    let held = this.bySegment.get(seg)
    if (!held) this.bySegment.set(seg, (held = new Set()))
    if (held.has(arena)) return
    held.add(arena)
    this.holds.set(arena, (this.holds.get(arena) ?? 0) + 1)
  }

  /** Frees those of `arenas` (just placed) that no segment holds. */
  releaseUnheld(arenas: Iterable<Buffer>): void {
    for (const arena of arenas) if (!this.holds.has(arena)) this.free(arena)
  }

  /** Segment `seg` is stored: frees the arenas no other segment holds. */
  stored(seg: string): void {
    for (const arena of this.bySegment.get(seg) ?? []) {
      const left = this.holds.get(arena)! - 1
      if (left > 0) {
        this.holds.set(arena, left)
      } else {
        this.holds.delete(arena)
        this.free(arena)
      }
    }
    this.bySegment.delete(seg)
  }

  /** Arenas held now (for tests). */
  get size(): number {
    return this.holds.size
  }
}
