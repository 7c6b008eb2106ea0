import { availableParallelism } from 'node:os'
import type { RepoKeys } from '../crypto/index.js'
import { nativeAddon, type NativeAddon } from '../util/native.js'
import type { BlobEncoder, EncodedChunk } from './pool.js'

const ID_BYTES = 32
const EMPTY = Buffer.alloc(0)

/**
 * Encodes blobs on the libuv thread pool with the native addon
 * (native/src/encode.c): the same bytes as the blob worker threads make, and
 * none of their memory — each worker is a V8 isolate, and two of them added
 * 45–80 MiB to the mount daemon's peak during flushes (docs/performance.md,
 * "Blob encoding without worker threads").
 *
 * At most `concurrency` batches run at once: the thread pool also serves the
 * portal's file I/O, which must not queue behind a backlog of encoding.
 */
export class NativeEncoder implements BlobEncoder {
  private running = 0
  private readonly waiting: (() => void)[] = []

  private constructor(
    private readonly addon: Required<Pick<NativeAddon, 'encodeBlobs'>>,
    private readonly keys: RepoKeys,
    private readonly frames: boolean,
    private readonly concurrency: number,
  ) {}

  /** The native encoder, or undefined when the addon (or its encoder) is missing. */
  static create(keys: RepoKeys, frames: boolean, concurrency = Math.max(1, Math.min(4, availableParallelism()))): NativeEncoder | undefined {
    const addon = nativeAddon()
    if (!addon?.encodeBlobs) return undefined
    return new NativeEncoder(addon as Required<Pick<NativeAddon, 'encodeBlobs'>>, keys, frames, concurrency)
  }

  async encode(sab: ArrayBufferLike, start: number, end: number, ranges: [number, number][]): Promise<EncodedChunk[]> {
    await this.slot()
    try {
      const pairs = new Float64Array(ranges.length * 2)
      ranges.forEach(([s, e], i) => {
        pairs[2 * i] = s - start
        pairs[2 * i + 1] = e - start
      })
      const { key, salt, counter } = this.keys.sealer('data').reserve(ranges.length)
      const [ids, sealed, layout] = await this.addon.encodeBlobs(new Uint8Array(sab, start, end - start), pairs, this.keys.key('content-id'), key, salt, counter, this.frames)
      // Views into one buffer per batch (see native/src/encode.c: why not one per blob).
      const out: EncodedChunk[] = []
      for (let i = 0; i < ranges.length; i++) {
        const off = layout[3 * i]
        const len = layout[3 * i + 1]
        const rawLength = layout[3 * i + 2]
        out.push(
          len < 0
            ? { id: EMPTY, sealed: EMPTY, rawLength, zero: true }
            : { id: ids.subarray(ID_BYTES * i, ID_BYTES * (i + 1)), sealed: sealed.subarray(off, off + len), rawLength, zero: false, arena: sealed },
        )
      }
      return out
    } finally {
      this.release()
    }
  }

  private async slot(): Promise<void> {
    if (this.running < this.concurrency) {
      this.running++
      return
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve)) // a finishing batch hands its slot over
  }

  private release(): void {
    const next = this.waiting.shift()
    if (next) next()
    else this.running--
  }
}
