/**
 * Paces V8's full collections by bytes read into short-lived buffers.
 *
 * V8 collects on account of memory outside its heap (Buffers) only after
 * 64 MiB more of it since the last collection. Blobs read from the bucket
 * or the portal live briefly (the decoded-blob cache holds 16 MiB of them),
 * so a cold read streaming a few hundred MiB/s carried up to 64 MiB of dead
 * ones, and the mount daemon's resident set grew by as much: `npm run bench
 * -- --workload seq`, cold-read daemons peaked at 162-163 MiB, and at
 * 125-127 with a full collection after every 16 MiB read (read speeds
 * within the run-to-run spread). A collection of the daemon's heap
 * (15-35 MiB) takes a few milliseconds.
 *
 * Only where `gc` is exposed (`--expose-gc`: the mount daemon, see
 * src/mount/runtime.ts); elsewhere this does nothing.
 */
const COLLECT_EVERY_BYTES = 16 * 1024 * 1024

/** Marked concurrently and incrementally, so requests are not held up by it. */
const ASYNC_MAJOR = { type: 'major', execution: 'async' } as const

let made = 0

/** Notes `bytes` of buffers that will soon be garbage; collects once enough have been noted. */
export function garbageMade(bytes: number): void {
  const gc = (globalThis as { gc?: (options?: { type: 'major'; execution: 'async' }) => void }).gc
  if (!gc) return
  made += bytes
  if (made < COLLECT_EVERY_BYTES) return
  made = 0
  gc(ASYNC_MAJOR)
}
