import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import type { MountRecord } from './registry.js'

const run = promisify(execFile)

/**
 * Hands the kernel's buffered writes of a `--writeback-cache` mount to its
 * daemon — syncfs(2), through coreutils' `sync -f` — so that a commit,
 * snapshot or unmount asked for next includes everything written so far, as
 * it does without the writeback cache. A no-op for other mounts.
 *
 * Runs in a child process: the daemon must never call this on its own mount
 * (the kernel would wait for the daemon to answer its own flush).
 */
export async function flushKernelCache(mount: Pick<MountRecord, 'mountpoint' | 'writebackCache'>): Promise<void> {
  if (!mount.writebackCache) return
  try {
    await run('sync', ['-f', mount.mountpoint], { timeout: 10 * 60_000 })
  } catch (err) {
    const detail = (err as { stderr?: string }).stderr?.trim() || (err as Error).message
    throw new Error(`could not flush the kernel's buffered writes of ${mount.mountpoint}: ${detail}`)
  }
}
