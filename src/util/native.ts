import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'

/** The optional native addon (native/, built at `npm install`); undefined means: use the JS fallback. */
export interface NativeAddon {
  cuts(data: Uint8Array, gear: Uint32Array, min: number, avg: number, max: number, maskStrict: number, maskLoose: number): Float64Array
  /** cuts() on the libuv thread pool; `data` must not change until it settles. */
  cutsAsync?(data: Uint8Array, gear: Uint32Array, min: number, avg: number, max: number, maskStrict: number, maskLoose: number): Promise<Float64Array>
  /**
   * Watches non-blocking `fd` on the event loop (uv_poll) and reads it when
   * readable: `callback(n)` for each message of n bytes read into `buffer`
   * (valid until the callback returns), `callback(-errno)` if reading fails.
   * After each message it keeps reading for `busyPollUs` microseconds
   * before it waits on the event loop again (0: never).
   */
  watch(fd: number, buffer: Buffer, callback: (n: number) => void, busyPollUs: number): object
  unwatch(handle: object): void
  /** Messages that arrived while the watcher was busy polling. */
  polled(handle: object): number
  /** malloc_trim(0): returns the C heap's free pages to the kernel; true if any were released. */
  trimHeap(): boolean
  /** mallopt(): M_ARENA_MAX, M_MMAP_THRESHOLD, M_TRIM_THRESHOLD (0 leaves one as it is); false if any could not be set (not glibc). */
  tuneMalloc?(arenaMax: number, mmapThreshold: number, trimThreshold: number): boolean
  /** AES-256-GCM: writes the ciphertext of the parts, then the tag, into `out` from `at`; returns the bytes written (-1: bad arguments). */
  gcmSeal(key: Buffer, nonce: Buffer, aad: Buffer, parts: Buffer[], out: Buffer, at: number): number
  /** AES-256-GCM: decrypts `ciphertext` into `out`; false when the tag does not check out. */
  gcmOpen(key: Buffer, nonce: Buffer, aad: Buffer, ciphertext: Buffer, tag: Buffer, out: Buffer): boolean
  /** Frees a buffer's memory now by detaching its ArrayBuffer (views then read as empty); false if it cannot be. */
  detachBuffer?(buffer: Uint8Array): boolean
  /**
   * Encodes each [start, end) pair of `ranges` (offsets into `data`) as one blob on the libuv thread
   * pool, as src/blob/codec.ts's encodeBlob does, blob i sealed under nonce counter + i. Resolves to
   * [ids, sealed, layout]: the blobs' IDs (32 bytes each) back to back, their sealed bytes back to
   * back, and per blob (offset, length, raw length) into the latter, length -1 for an all-zero blob.
   * `data` must not change until it settles.
   */
  encodeBlobs?(
    data: Uint8Array,
    ranges: Float64Array,
    contentKey: Buffer,
    sealKey: Buffer,
    salt: Buffer,
    counter: bigint,
    frames: boolean,
  ): Promise<[Buffer, Buffer, Float64Array]>
}

let loaded: NativeAddon | null | undefined

export function nativeAddon(): NativeAddon | undefined {
  if (loaded === undefined) {
    loaded = null
    if (process.env.S0FS_NATIVE !== '0') {
      // src/util/native.ts and dist/src/util/native.js both sit below the package root.
      const url = import.meta.url
      const root = new URL(url.includes('/dist/') ? '../../../' : '../../', url)
      const file = new URL('native/build/Release/s0fs_native.node', root).pathname
      if (existsSync(file)) {
        try {
          loaded = createRequire(url)(file) as NativeAddon
        } catch {
          loaded = null
        }
      }
    }
  }
  return loaded ?? undefined
}

/**
 * Frees a buffer's memory now instead of when V8 next collects (with the
 * native addon; without it, nothing happens and V8 frees it later). Only a
 * buffer that is the whole of its ArrayBuffer: small Buffers share a pooled
 * one with others. The caller must hold the only use of it: views of a freed
 * buffer read as empty.
 */
export function freeBuffer(buffer: Uint8Array): void {
  if (buffer.byteOffset !== 0 || buffer.byteLength !== buffer.buffer.byteLength || buffer.buffer instanceof SharedArrayBuffer) return
  nativeAddon()?.detachBuffer?.(buffer)
}
