import { promises as fsp } from 'node:fs'

/**
 * Read-only file handles kept open between reads of the same files, least
 * recently used closed first. For files that never change once written (the
 * portal's segment windows): a sequential reader reads each 4 MiB window in
 * several pieces, and opening and closing it around every piece cost two of
 * every three thread-pool round trips of a portal read.
 *
 * A handle in use is closed only once its last reader is done. A file
 * deleted while its handle is open still reads the same bytes (and holds its
 * disk space until the handle closes: at most `max` files).
 */
export class OpenFiles {
  private readonly entries = new Map<string, Entry>()

  constructor(private readonly max = 16) {}

  /**
   * Runs `use` with an open handle of `file`, or returns undefined when the
   * file cannot be opened (e.g. not there yet: that is not remembered).
   */
  async with<T>(file: string, use: (handle: fsp.FileHandle) => Promise<T>): Promise<T | undefined> {
    let entry = this.entries.get(file)
    if (entry) {
      // Most recently used last.
      this.entries.delete(file)
      this.entries.set(file, entry)
    } else {
      entry = { handle: fsp.open(file, 'r').catch(() => undefined), users: 0, dropped: false }
      this.entries.set(file, entry)
      this.evictBeyond(this.max)
    }
    entry.users++
    try {
      const handle = await entry.handle
      if (!handle) {
        if (this.entries.get(file) === entry) this.entries.delete(file)
        return undefined
      }
      return await use(handle)
    } finally {
      entry.users--
      if (entry.dropped && entry.users === 0) close(entry)
    }
  }

  /** Closes every handle (once its readers are done). */
  clear(): void {
    this.evictBeyond(0)
  }

  private evictBeyond(max: number): void {
    for (const [file, entry] of this.entries) {
      if (this.entries.size <= max) break
      this.entries.delete(file)
      entry.dropped = true
      if (entry.users === 0) close(entry)
    }
  }
}

interface Entry {
  handle: Promise<fsp.FileHandle | undefined>
  users: number
  /** Out of the cache: close when the last user is done. */
  dropped: boolean
}

function close(entry: Entry): void {
  void entry.handle.then((h) => h?.close()).catch(() => undefined)
}
