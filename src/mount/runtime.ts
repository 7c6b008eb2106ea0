import { nativeAddon } from '../util/native.js'

/**
 * How a mount daemon's Node process is started. A daemon lives for days next
 * to the agent it serves, so these trade a little throughput for a small,
 * steady resident set (measured in docs/performance.md):
 *
 * - `--max-semi-space-size=2`: a young generation of 2 MiB per semi-space
 *   (default 16); most garbage is per-request and dies young anyway.
 * - `--heap-growing-percent=10`: after a full GC, the heap may grow 10% over
 *   what survived before the next one (V8's default lets it double or more,
 *   which is where most of a busy daemon's RSS went).
 * - glibc: one arena (the worker threads allocate few, large buffers),
 *   free memory at the top of the heap returned above 128 KiB, buffers
 *   under 32 MiB kept on the heap. Mapping them individually instead (a
 *   128 KiB or 1 MiB threshold) cut sequential writes from ~150 to ~25
 *   MiB/s: every 1 MiB request buffer then costs an mmap, 256 page faults
 *   and a munmap.
 * - `--expose-gc`: blob worker threads collect their young generation after
 *   each encode batch (src/blob/worker.ts), which their isolates otherwise did
 *   too rarely: ~50 MiB off the peak of tar's commit and of a 512 MiB dd; and
 *   the daemon paces full collections by bytes read (src/util/gc-pacer.ts).
 * - 16 libuv threads: /dev/fuse reads block a thread each.
 */
export const DAEMON_NODE_FLAGS = ['--max-semi-space-size=2', '--heap-growing-percent=10', '--expose-gc']

export const DAEMON_ENV: Record<string, string> = {
  MALLOC_ARENA_MAX: '1',
  MALLOC_MMAP_THRESHOLD_: String(32 * 1024 * 1024),
  MALLOC_TRIM_THRESHOLD_: String(128 * 1024),
  UV_THREADPOOL_SIZE: '16',
}

const HEAP_TRIM_IDLE_MS = 2000
/** What the process holds besides V8's heap and Buffers when idle (code, the addon, libuv, OpenSSL): ~60 MiB. */
const HEAP_TRIM_SLACK_BYTES = 96 * 1024 * 1024

/**
 * Returns the C heap's free pages to the kernel once the daemon is idle (see
 * native/src/memory.c): checked every second; trims when `idleMs()` (time
 * since the last request) reaches `minIdleMs` and the resident set exceeds
 * what V8 and Buffers hold by more than `slackBytes`. Not while busy:
 * trimming every second during a 512 MiB `dd` cost a fifth of its throughput
 * (the freed pages fault back in) and barely moved its peak. Without the
 * native addon it does nothing. Returns a stop function.
 */
export function startHeapTrimmer(
  idleMs: () => number,
  options: { minIdleMs?: number; slackBytes?: number; trim?: () => boolean } = {},
): () => void {
  const trim = options.trim ?? nativeAddon()?.trimHeap
  if (!trim) return () => undefined
  const minIdle = options.minIdleMs ?? HEAP_TRIM_IDLE_MS
  const slack = options.slackBytes ?? HEAP_TRIM_SLACK_BYTES
  const timer = setInterval(() => {
    if (idleMs() < minIdle) return
    const m = process.memoryUsage()
    if (m.rss - m.heapTotal - m.external > slack) trim()
  }, 1000)
  timer.unref()
  return () => clearInterval(timer)
}
