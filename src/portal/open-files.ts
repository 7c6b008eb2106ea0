import fs from 'node:fs'

/**
 * Read-only file descriptors kept open between reads of the same files,
 * least recently used closed first. For files that never change once written
 * (the portal's segment windows): a sequential reader reads each 4 MiB window
 * in several pieces, and opening and closing it around every piece cost two
 * of every three thread-pool round trips of a portal read.
 *
 * Files are opened synchronously (a path lookup on local disk, microseconds),
 * so a small read can be served synchronously too (`withSync`); large reads
 * go through the thread pool (`with`).
 *
 * A descriptor in use is closed only once its last reader is done: never
 * under an asynchronous read, where a reused number would read another file.
 * A file deleted while its descriptor is open still reads the same bytes (and
 * holds its disk space until the descriptor closes: at most `max` files).
 */
export class OpenFiles {
  private readonly entries = new Map<string, Entry>()

  constructor(private readonly max = 16) {}

  /**
   * Runs `use` with an open descriptor of `file`, or returns undefined when
   * the file cannot be opened (e.g. not there yet: that is not remembered).
   */
  async with<T>(file: string, use: (fd: number) => Promise<T>): Promise<T | undefined> {
    const entry = this.acquire(file)
    if (!entry) return undefined
    try {
      return await use(entry.fd)
    } finally {
      this.release(entry)
    }
  }

  /** `with` for a synchronous `use`. */
  withSync<T>(file: string, use: (fd: number) => T): T | undefined {
    const entry = this.acquire(file)
    if (!entry) return undefined
    try {
      return use(entry.fd)
    } finally {
      this.release(entry)
    }
  }

  /** Closes every descriptor (once its readers are done). */
  clear(): void {
    this.evictBeyond(0)
  }

  private acquire(file: string): Entry | undefined {
    let entry = this.entries.get(file)
    if (entry) {
      // Most recently used last.
      this.entries.delete(file)
      this.entries.set(file, entry)
    } else {
      let fd: number
      try {
        fd = fs.openSync(file, 'r')
      } catch {
        return undefined
      }
      entry = { fd, users: 0, dropped: false }
      this.entries.set(file, entry)
      this.evictBeyond(this.max)
    }
    entry.users++
    return entry
  }

  private release(entry: Entry): void {
    entry.users--
    if (entry.dropped && entry.users === 0) close(entry)
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
  fd: number
  users: number
  /** Out of the cache: close when the last user is done. */
  dropped: boolean
}

function close(entry: Entry): void {
  fs.close(entry.fd, () => undefined)
}
