import { fstatSync, mkdtempSync, readdirSync, readlinkSync, readSync, rmSync, unlinkSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { OpenFiles } from '../../src/portal/open-files.js'

const dir = mkdtempSync(path.join(os.tmpdir(), 's0fs-open-files-'))
afterAll(() => rmSync(dir, { recursive: true, force: true }))

function file(name: string, text: string): string {
  const p = path.join(dir, name)
  writeFileSync(p, text)
  return p
}

/** The whole file, by position (a descriptor is shared by its readers: none moves its offset). */
const readWhole = (fd: number) => {
  const buf = Buffer.alloc(fstatSync(fd).size)
  readSync(fd, buf, 0, buf.length, 0)
  return buf.toString()
}
const readAll = async (fd: number) => readWhole(fd)
/** Descriptors open on this test's files (other tests in this process open and close their own meanwhile). */
const openFds = () =>
  readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`).startsWith(dir + path.sep)
    } catch {
      return false // closed since the listing
    }
  }).length

/** Waits (up to 5 s) for the count of open descriptors on this test's files to reach `n`, then checks it is exactly that. */
async function settlesTo(n: number): Promise<void> {
  for (let i = 0; i < 500 && openFds() !== n; i++) await new Promise((r) => setTimeout(r, 10))
  expect(openFds()).toBe(n)
}

describe('OpenFiles', () => {
  it('keeps a handle open between reads: a file deleted after its first read still reads, until cleared', async () => {
    const files = new OpenFiles(4)
    const p = file('a', 'window a')
    expect(await files.with(p, readAll)).toBe('window a')
    unlinkSync(p)
    expect(files.withSync(p, (fd) => readWhole(fd).slice(0, 6))).toBe('window')
    files.clear()
    expect(await files.with(p, readAll)).toBeUndefined()
  })

  it('does not remember a file that could not be opened', async () => {
    const files = new OpenFiles(4)
    const p = path.join(dir, 'later')
    expect(await files.with(p, readAll)).toBeUndefined()
    expect(files.withSync(p, readWhole)).toBeUndefined()
    writeFileSync(p, 'there now')
    expect(files.withSync(p, readWhole)).toBe('there now')
    files.clear()
  })

  it('closes a descriptor that a synchronous reader threw from, once it is evicted', async () => {
    await settlesTo(0)
    const files = new OpenFiles(1)
    const p = file('throws', 'x')
    expect(() => files.withSync(p, () => {
      throw new Error('reader failed')
    })).toThrow('reader failed')
    // The throw released the descriptor: evicting it (by opening another file) closes it.
    expect(files.withSync(file('next', 'y'), readWhole)).toBe('y')
    await settlesTo(1)
    files.clear()
    await settlesTo(0)
  })

  it('holds at most `max` handles, and never closes one a reader is using', async () => {
    // Handles close asynchronously: the tests before may still be closing theirs, and this one's evictions take a moment.
    await settlesTo(0)
    const files = new OpenFiles(3)
    let release!: () => void
    const held = new Promise<void>((r) => (release = r))
    const first = file('held', 'still readable')
    // A reader holds the first handle while ten other files push it out of the cache.
    const reading = files.with(first, async (fd) => {
      await held
      return readAll(fd)
    })
    for (let i = 0; i < 10; i++) expect(await files.with(file(`f${i}`, `file ${i}`), readAll)).toBe(`file ${i}`)
    // Three cached plus the one in use.
    await settlesTo(4)
    release()
    expect(await reading).toBe('still readable')
    files.clear()
    await settlesTo(0)
  })
})
