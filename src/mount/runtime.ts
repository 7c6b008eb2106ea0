import { promises as fsp } from 'node:fs'
import os from 'node:os'
import v8 from 'node:v8'
import { runInNewContext } from 'node:vm'
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
 *   buffers under 32 MiB kept on the heap, and up to 64 MiB of free memory
 *   at its top kept for reuse. Mapping buffers individually (a 128 KiB or
 *   1 MiB threshold) cut sequential writes from ~150 to ~25 MiB/s: every
 *   1 MiB request buffer then costs an mmap, 256 page faults and a munmap.
 *   Returning the top of the heap above 128 KiB (as until 2026-12-02) did
 *   the same more quietly: every buffer freed at the top went back to the
 *   kernel and the next one faulted its pages in again (page faults were a
 *   fifth of a cold read's CPU on this VM). Keeping 64 MiB, in alternating
 *   `npm run bench -- --workload seq,tar,jfsbench` runs: sequential writes
 *   263-315 -> 612-841 MiB/s, cold reads from the portal 326-404 -> 510-521,
 *   at about the same peaks. The heap trimmer below gives the memory back
 *   when the daemon idles or nears its budget.
 * - `--expose-gc`: blob worker threads collect their young generation after
 *   each encode batch (src/blob/worker.ts), which their isolates otherwise did
 *   too rarely: ~50 MiB off the peak of tar's commit and of a 512 MiB dd; and
 *   the daemon paces full collections by bytes read (src/util/gc-pacer.ts).
 * - 16 libuv threads: /dev/fuse reads block a thread each.
 */
export const DAEMON_NODE_FLAGS = ['--max-semi-space-size=2', '--heap-growing-percent=10', '--expose-gc']

const MALLOC = { arenaMax: 1, mmapThreshold: 32 * 1024 * 1024, trimThreshold: 64 * 1024 * 1024 }

export const DAEMON_ENV: Record<string, string> = {
  MALLOC_ARENA_MAX: String(MALLOC.arenaMax),
  MALLOC_MMAP_THRESHOLD_: String(MALLOC.mmapThreshold),
  MALLOC_TRIM_THRESHOLD_: String(MALLOC.trimThreshold),
  UV_THREADPOOL_SIZE: '16',
}

/**
 * Gives a daemon started some other way — `s0fs mount -f` run by a container
 * or a service manager — what of DAEMON_NODE_FLAGS and DAEMON_ENV can be set
 * from inside a running process: glibc's malloc parameters, an exposed `gc`,
 * and the heap growing factor. (The thread pool size is set by bin/s0fs.js
 * before its first use. The young generation's size is fixed when V8 starts:
 * `NODE_OPTIONS=--max-semi-space-size=2`, as docker/entrypoint.sh sets.)
 */
export function applyDaemonRuntime(): void {
  nativeAddon()?.tuneMalloc?.(MALLOC.arenaMax, MALLOC.mmapThreshold, MALLOC.trimThreshold)
  const g = globalThis as { gc?: unknown }
  if (typeof g.gc !== 'function') {
    v8.setFlagsFromString('--expose-gc')
    g.gc = runInNewContext('gc')
  }
  v8.setFlagsFromString('--heap-growing-percent=10')
}

/** The nice value of the thread that answers FUSE requests (see raiseServingPriority). */
export const SERVING_NICE = -5

/**
 * Raises the priority of this thread — the one that answers every FUSE
 * request — above the libuv pool's, where the background work runs (blob
 * encoding, cut points, log writes, the portal's file I/O). On two cores a
 * large flush keeps both busy, and a request waited for the CPU behind it.
 * Linux keeps a nice value per thread, and setpriority(PRIO_PROCESS, 0) sets
 * the caller's alone; threads inherit it when they are created, so the pool
 * is started first. (Without the addon, blob worker threads start later and
 * inherit the raised value: no worse than before.) Needs CAP_SYS_NICE (root
 * has it; a container needs --cap-add SYS_NICE); without, nothing changes.
 * Returns whether it was raised.
 *
 * Writing 1 GiB and then 100 files of 128 KiB on a foreground daemon, two
 * alternating pairs: the small files at 280 / 561 -> 728 / 751 files/s, the
 * slowest of them 50 / 13 -> 5 / 4 ms, the 1 GiB at 263 / 294 -> 311 / 313
 * MiB/s; `npm run bench -- --workload small,tar,jfsbench` the same way:
 * jfsbench's small writes 482 / 411 -> 637 / 556 files/s, tar and creates
 * within the noise.
 */
export async function raiseServingPriority(): Promise<boolean> {
  await fsp.stat('/') // libuv creates its pool threads at the first request to it
  try {
    os.setPriority(0, SERVING_NICE)
    return true
  } catch {
    return false
  }
}

const HEAP_TRIM_IDLE_MS = 2000
/** What the process holds besides V8's heap and Buffers when idle (code, the addon, libuv, OpenSSL): ~60 MiB. */
const HEAP_TRIM_SLACK_BYTES = 96 * 1024 * 1024
/** Above this resident set the heap is trimmed even while busy (the daemon's target is < 150 MiB)... */
const HEAP_TRIM_BUDGET_BYTES = 128 * 1024 * 1024
/** ...at most this often, and checked this often. */
const HEAP_TRIM_BUDGET_EVERY_MS = 500
const HEAP_TRIM_CHECK_MS = 100

/**
 * Returns the C heap's free pages to the kernel (see native/src/memory.c)
 * when the daemon idles or nears its memory budget:
 *
 * - once `idleMs()` (time since the last request) reaches `minIdleMs` and the
 *   resident set exceeds what V8 and Buffers hold by more than `slackBytes`
 *   (checked every second);
 * - while busy, only once the resident set passes `budgetBytes` (checked
 *   every 100 ms, at most every 500 ms). Trimming every second regardless
 *   cost a 512 MiB `dd` a fifth of its throughput (the freed pages fault
 *   back in); below the budget the free memory is worth keeping for reuse.
 *
 * Without the native addon it does nothing. Returns a stop function.
 */
export function startHeapTrimmer(
  idleMs: () => number,
  options: { minIdleMs?: number; slackBytes?: number; budgetBytes?: number; rss?: () => number; trim?: () => boolean } = {},
): () => void {
  const trim = options.trim ?? nativeAddon()?.trimHeap
  if (!trim) return () => undefined
  const minIdle = options.minIdleMs ?? HEAP_TRIM_IDLE_MS
  const slack = options.slackBytes ?? HEAP_TRIM_SLACK_BYTES
  const budget = options.budgetBytes ?? HEAP_TRIM_BUDGET_BYTES
  const rss = options.rss ?? process.memoryUsage.rss
  let checks = 0
  let lastBudgetTrim = -Infinity
  const timer = setInterval(() => {
    const now = Date.now()
    if (now - lastBudgetTrim >= HEAP_TRIM_BUDGET_EVERY_MS && rss() > budget) {
      lastBudgetTrim = now
      trim()
      return
    }
    if (++checks % (1000 / HEAP_TRIM_CHECK_MS) !== 0 || idleMs() < minIdle) return
    const m = process.memoryUsage()
    if (m.rss - m.heapTotal - m.external > slack) trim()
  }, HEAP_TRIM_CHECK_MS)
  timer.unref()
  return () => clearInterval(timer)
}
