import { createHmac } from 'node:crypto'
import { nativeAddon } from '../util/native.js'

/**
 * Content-defined chunking, FastCDC style (Xia et al., 2016/2020): a gear
 * rolling hash, cut-point skipping below `min`, and normalized chunking — a
 * stricter mask before `avg` and a looser one after — which narrows the chunk
 * size distribution around `avg`.
 *
 * The gear table is derived from the repository's chunker key, so chunk
 * boundaries (and therefore blob sizes in the bucket) do not fingerprint known
 * files across repositories.
 */

export interface ChunkParams {
  min: number
  avg: number
  max: number
}

export interface Chunker {
  readonly params: ChunkParams
  /** Whether the native addon does the work. */
  readonly native: boolean
  /**
   * Cut points (exclusive end offsets) for `data`. The last cut is always
   * `data.length`; when `final` is false it is an artificial cut (the data
   * continues) and callers may carry that tail over to the next call.
   */
  cuts(data: Uint8Array): number[]
  /**
   * cuts() on the libuv thread pool, off the event loop (native only): for
   * data that stays unchanged until the promise settles.
   */
  cutsAsync?(data: Uint8Array): Promise<number[]>
}

export function gearTable(chunkerKey: Buffer): Uint32Array {
  const table = new Uint32Array(256)
  let block = Buffer.alloc(0)
  for (let i = 0; i < 256; i++) {
    if (i % 8 === 0) block = createHmac('sha256', chunkerKey).update(`gear ${i / 8}`).digest()
    table[i] = block.readUInt32LE((i % 8) * 4)
  }
  return table
}

/** The chunker: the native addon's loop when it is built (~3x faster here), else the JS one. */
export function createChunker(params: ChunkParams, gear: Uint32Array, implementation: 'auto' | 'js' = 'auto'): Chunker {
  const js = createJsChunker(params, gear)
  const native = implementation === 'auto' ? nativeAddon() : undefined
  if (!native) return js
  const { strict, loose } = masks(params)
  return {
    params,
    native: true,
    cuts: (data) => Array.from(native.cuts(data, gear, params.min, params.avg, params.max, strict, loose)),
    cutsAsync: native.cutsAsync
      ? async (data) => Array.from(await native.cutsAsync!(data, gear, params.min, params.avg, params.max, strict, loose))
      : undefined,
  }
}

function masks(params: ChunkParams): { strict: number; loose: number } {
  const bits = Math.round(Math.log2(params.avg))
  // Masks take the hash's high bits: after a left shift they depend on the last 32 bytes.
  return { strict: highBits(bits + 2), loose: highBits(bits - 2) }
}

function createJsChunker(params: ChunkParams, gear: Uint32Array): Chunker {
  if (!(params.min > 0 && params.min <= params.avg && params.avg <= params.max)) {
    throw new Error(`invalid chunk sizes min=${params.min} avg=${params.avg} max=${params.max}`)
  }
  const { strict: maskStrict, loose: maskLoose } = masks(params)
  const { min, avg, max } = params

  function nextCut(data: Uint8Array, start: number, end: number): number {
    const n = end - start
    if (n <= min) return end
    const limit = start + Math.min(n, max)
    const normal = start + Math.min(avg, Math.min(n, max))
    let fp = 0
    let i = start + min
    for (; i < normal; i++) {
      fp = ((fp << 1) + gear[data[i]]) | 0
      if ((fp & maskStrict) === 0) return i + 1
    }
    for (; i < limit; i++) {
      fp = ((fp << 1) + gear[data[i]]) | 0
      if ((fp & maskLoose) === 0) return i + 1
    }
    return limit
  }

  return {
    params,
    native: false,
    cuts(data: Uint8Array): number[] {
      const out: number[] = []
      let at = 0
      while (at < data.length) {
        at = nextCut(data, at, data.length)
        out.push(at)
      }
      return out
    },
  }
}

function highBits(count: number): number {
  const c = Math.max(1, Math.min(31, count))
  return (0xffffffff << (32 - c)) | 0
}
