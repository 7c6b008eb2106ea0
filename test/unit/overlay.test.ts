import { describe, expect, it } from 'vitest'
import { Overlay, type Piece } from '../../src/fs/overlay.js'
import { mulberry32 } from '../../src/store/index.js'

/**
 * The overlay against a byte-by-byte model: after every operation, each byte
 * maps to the (record, offset) that last wrote it, and the listener's count of
 * live bytes matches. Enough pieces that the blocks split and empty out.
 */

const SIZE = 40_000

function expand(pieces: Piece[]): Int32Array {
  const bytes = new Int32Array(SIZE * 2).fill(-1)
  let last = -1
  for (const p of pieces) {
    expect(p.start).toBeGreaterThanOrEqual(last) // sorted, non-overlapping
    expect(p.end).toBeGreaterThan(p.start)
    last = p.end
    for (let x = p.start; x < p.end; x++) {
      bytes[2 * x] = p.loc.seq
      bytes[2 * x + 1] = p.srcOff + (x - p.start)
    }
  }
  return bytes
}

describe('overlay', () => {
  for (const seed of [1, 2, 3]) {
    it(`matches a byte model through writes, punches, truncates and stored spans (seed ${seed})`, () => {
      const random = mulberry32(seed)
      let live = 0
      const overlay = new Overlay({ added: (p) => (live += p.end - p.start), removed: (p) => (live -= p.end - p.start) })
      const model = new Int32Array(SIZE * 2).fill(-1)
      let seq = 0
      for (let step = 0; step < 6000; step++) {
        const r = random()
        const start = Math.floor(random() * SIZE)
        const len = 1 + Math.floor(random() * (r < 0.9 ? 16 : 400))
        const end = Math.min(SIZE, start + len)
        if (r < 0.85) {
          seq++
          const srcOff = Math.floor(random() * 100)
          overlay.insert(start, end, { file: 0, seq }, srcOff)
          for (let x = start; x < end; x++) {
            model[2 * x] = seq
            model[2 * x + 1] = srcOff + (x - start)
          }
        } else if (r < 0.93) {
          overlay.remove(start, end)
          model.fill(-1, 2 * start, 2 * end)
        } else if (r < 0.95) {
          const size = Math.floor(SIZE * (0.5 + random() / 2))
          overlay.truncate(size)
          model.fill(-1, 2 * size)
        } else {
          // A flush: spans made of whole pieces (as the flusher plans them), stored up to a seq.
          const pieces = overlay.pieces
          const spans: { start: number; end: number; maxSeq: number }[] = []
          const maxSeq = Math.floor(seq * random())
          for (let i = 0; i < pieces.length; i += 1 + Math.floor(random() * 5)) spans.push({ start: pieces[i].start, end: pieces[i].end, maxSeq })
          overlay.removeStored(spans)
          for (const s of spans) for (let x = s.start; x < s.end; x++) if (model[2 * x] !== -1 && model[2 * x] <= maxSeq) model.fill(-1, 2 * x, 2 * x + 2)
        }
        if (step % 200 === 0 || step === 5999) {
          const got = expand(overlay.pieces)
          expect(Buffer.from(got.buffer).equals(Buffer.from(model.buffer))).toBe(true)
          let bytes = 0
          for (let x = 0; x < SIZE; x++) if (model[2 * x] !== -1) bytes++
          expect(live).toBe(bytes)
          expect(overlay.bytes).toBe(bytes)
          // covering() clips to the asked range.
          const a = Math.floor(random() * SIZE)
          const b = Math.min(SIZE, a + 1 + Math.floor(random() * 3000))
          const clipped = expand(overlay.covering(a, b))
          const want = new Int32Array(SIZE * 2).fill(-1)
          want.set(model.subarray(2 * a, 2 * b), 2 * a)
          expect(Buffer.from(clipped.buffer).equals(Buffer.from(want.buffer))).toBe(true)
        }
      }
      // Enough pieces at some point to need several blocks.
      expect(overlay.isEmpty).toBe(live === 0)
    })
  }

  it('keeps ten thousand scattered pieces in order, and a stored flush of all of them empties it', () => {
    const overlay = new Overlay({ added: () => undefined, removed: () => undefined })
    const offsets = Array.from({ length: 10_000 }, (_, i) => i * 8192).sort(() => Math.random() - 0.5)
    offsets.forEach((off, i) => overlay.insert(off, off + 4096, { file: 0, seq: i + 1 }, 0))
    const pieces = overlay.pieces
    expect(pieces.length).toBe(10_000)
    expect(pieces.every((p, i) => p.start === i * 8192)).toBe(true)
    overlay.removeStored(pieces.map((p) => ({ start: p.start, end: p.end, maxSeq: 10_000 })))
    expect(overlay.isEmpty).toBe(true)
  })
})
