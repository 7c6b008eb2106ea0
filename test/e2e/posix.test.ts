import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { runPythonJson } from '../../bench/python.js'
import { mountVolume, mustSh, useBackend } from '../helpers/mount.js'

/**
 * POSIX behaviour, compared with a local directory: the same suite
 * (test/fixtures/posix-suite.py: permissions, rename edge cases, link
 * counts, times, sparse files, xattrs, O_APPEND/O_TRUNC/O_EXCL,
 * unlinked-but-open files, mmap, names) runs on both, and every case must
 * observe the same thing — except the differences named here, each with its
 * reason. The README records the count.
 */

const SUITE = path.join(import.meta.dirname, '../fixtures/posix-suite.py')

/** Where s0fs knowingly differs from a local ext4 directory. */
const KNOWN_DIFFERENCES: Record<string, string> = {
  'sparse-1gib': 'st_blocks counts the file size, not the blocks allocated (du shows the apparent size)',
}

/** And with --writeback-cache, where the kernel keeps a written file's block count itself (as ext4 reports it). */
const KNOWN_WRITEBACK_DIFFERENCES: Record<string, string> = {
  'seek-data-hole': 'SEEK_DATA/SEEK_HOLE see the whole file as data: the latest writes may still be in the kernel, out of the daemon\'s sight',
}

function runSuite(dir: string): Promise<Record<string, unknown>> {
  return runPythonJson(SUITE, [dir], `posix suite on ${dir}`)
}

describe('POSIX behaviour against a local directory', () => {
  const ctx = useBackend()

  // The kernel's writeback cache moves sizes, times and write ordering into the kernel: the same suite must hold there too.
  it.each([
    ['', [], KNOWN_DIFFERENCES],
    [' (--writeback-cache)', ['--writeback-cache'], KNOWN_WRITEBACK_DIFFERENCES],
  ])('every case observes what a local directory does, except the known differences%s', async (_, extra, known) => {
    const local = mkdtempSync(path.join(tmpdir(), 's0fs-posix-ref-'))
    try {
      // --allow-other: several cases act as another user (uid 65534).
      const m = ctx.track(await mountVolume(ctx.backend, { volume: `posix${extra.length}`, args: ['--allow-other', ...extra] }))
      await mustSh(`chmod 755 ${m.mountpoint}`)
      const [reference, mounted] = [await runSuite(local), await runSuite(m.mountpoint)]
      const cases = Object.keys(reference)
      expect(cases.length).toBeGreaterThanOrEqual(60)
      const differences = cases.filter((c) => JSON.stringify(reference[c]) !== JSON.stringify(mounted[c]))
      const unexpected = differences.filter((c) => !(c in known)).map((c) => ({ case: c, local: reference[c], s0fs: mounted[c] }))
      expect(unexpected).toEqual([])
      // A known difference that went away is news too: update the list (and the README's count).
      expect(differences.sort()).toEqual(Object.keys(known).sort())
      await m.umount()
    } finally {
      rmSync(local, { recursive: true, force: true })
    }
  }, 300_000)
})
