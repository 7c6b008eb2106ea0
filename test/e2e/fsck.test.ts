import { randomBytes } from 'node:crypto'
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { runCli } from '../helpers/cli.js'
import { fileBackend, useBackend, withKeyFile } from '../helpers/mount.js'

/**
 * fsck against real damage in a file:// repository (whose objects are plain
 * files we can flip, truncate and delete): what it finds, the paths it
 * names, and what --repair does.
 */

function segments(repoDir: string): { file: string; mtimeMs: number; size: number }[] {
  const root = path.join(repoDir, 'seg')
  return readdirSync(root).flatMap((d) =>
    readdirSync(path.join(root, d)).map((f) => {
      const file = path.join(root, d, f)
      const st = statSync(file)
      return { file, mtimeMs: st.mtimeMs, size: st.size }
    }),
  )
}

function flipByte(file: string, at: number): void {
  const data = readFileSync(file)
  data[at] ^= 0xff
  writeFileSync(file, data)
}

describe('fsck', () => {
  const ctx = useBackend(() => withKeyFile(fileBackend))
  const s0fs = (args: string[], input?: Buffer | string) => runCli([...args, '--repo', ctx.backend.repo!], { env: ctx.backend.env, input, timeoutMs: 120_000 })
  const repoDir = () => new URL(ctx.backend.repo!).pathname

  it('finds a flipped byte only with --read-data, names the file in the volume and the snapshot, and --repair zeroes it', async () => {
    const a = randomBytes(400_000)
    const b = randomBytes(400_000)
    expect((await s0fs(['volume', 'create', 'v'])).code).toBe(0)
    expect((await s0fs(['put', '-', 'v:/a.bin'], a)).code).toBe(0)
    const segA = segments(repoDir()).sort((x, y) => y.mtimeMs - x.mtimeMs)[0]
    expect((await s0fs(['put', '-', 'v:/b.bin'], b)).code).toBe(0)
    expect((await s0fs(['snapshot', 'create', 'v', 'snap'])).code).toBe(0)

    const clean = await s0fs(['fsck', '--read-data'])
    expect(clean.code).toBe(0)
    expect(clean.stdout).toMatch(/no damage found/)

    flipByte(segA.file, Math.floor(segA.size / 2))
    // Metadata and segment presence are fine: only reading the data finds it.
    expect((await s0fs(['fsck'])).code).toBe(0)
    const found = await s0fs(['fsck', '--read-data'])
    expect(found.code).toBe(8)
    expect(found.stdout).toMatch(/DAMAGED: blob in segment/)
    expect(found.stdout).toMatch(/v:\/a\.bin bytes 0-400000/)
    expect(found.stdout).toMatch(/snap:\/a\.bin bytes 0-400000/)
    expect(found.stdout).not.toMatch(/b\.bin/)
    // Reading the damaged file is an error (exit 8), never wrong bytes; the rest of the volume reads fine.
    const bad = await s0fs(['cat', 'v:/a.bin'])
    expect(bad.code).toBe(8)
    expect(bad.stdout).toBe('')
    const good = await runCli(['get', 'v:/b.bin', path.join(ctx.backend.home, 'b.out'), '--repo', ctx.backend.repo!], { env: ctx.backend.env })
    expect(good.code).toBe(0)
    expect(readFileSync(path.join(ctx.backend.home, 'b.out')).equals(b)).toBe(true)

    const repaired = JSON.parse((await s0fs(['fsck', '--read-data', '--repair', '--json'])).stdout)
    expect(repaired.repaired).toEqual([expect.objectContaining({ ref: 'v', path: '/a.bin', start: 0, end: 400_000 })])
    // The snapshot is immutable: its damage is still reported, so the run is not clean.
    expect(repaired.ok).toBe(false)
    await s0fs(['get', 'v:/a.bin', path.join(ctx.backend.home, 'a.out')])
    const after = readFileSync(path.join(ctx.backend.home, 'a.out'))
    expect(after.length).toBe(a.length)
    expect(after.equals(Buffer.alloc(a.length))).toBe(true)
    expect((await s0fs(['cat', 'snap:/a.bin'])).code).toBe(8)
    expect((await s0fs(['snapshot', 'delete', 'snap'])).code).toBe(0)
    expect((await s0fs(['fsck', '--read-data'])).code).toBe(0)
  }, 180_000)

  it('names every fork and snapshot that shares damaged data, however much of the tree they share', async () => {
    // Enough files that the tree has interior pages: a fork and a snapshot share those, not only leaves.
    const tree = path.join(ctx.backend.home, 'many')
    mkdirSync(tree)
    for (let i = 0; i < 2000; i++) writeFileSync(path.join(tree, `m${i}`), `m${i}\n`)
    const data = randomBytes(2_000_000)
    expect((await s0fs(['volume', 'create', 'big'])).code).toBe(0)
    expect((await s0fs(['put', tree, 'big:/many'])).code).toBe(0)
    const before = new Set(segments(repoDir()).map((s) => s.file))
    expect((await s0fs(['put', '-', 'big:/data'], data)).code).toBe(0)
    const dataSegments = segments(repoDir()).filter((s) => !before.has(s.file))
    expect((await s0fs(['fork', 'big', 'bigfork'])).code).toBe(0)
    expect((await s0fs(['snapshot', 'create', 'big', 'bigsnap'])).code).toBe(0)
    for (const seg of dataSegments) rmSync(seg.file)

    const found = await s0fs(['fsck'])
    expect(found.code).toBe(8)
    for (const ref of ['big', 'bigfork', 'bigsnap']) expect(found.stdout).toContain(`${ref}:/data`)
    // Both volumes are repaired; the snapshot cannot be, so the run still reports damage.
    const repaired = await s0fs(['fsck', '--repair', '--json'])
    expect(repaired.code).toBe(8)
    expect([...new Set(JSON.parse(repaired.stdout).repaired.map((r: { ref: string }) => r.ref))].sort()).toEqual(['big', 'bigfork'])
    expect((await s0fs(['cat', 'bigfork:/data'])).code).toBe(0)
  }, 180_000)

  it('reports a missing segment and unreadable metadata with exit 8', async () => {
    expect((await s0fs(['volume', 'create', 'w'])).code).toBe(0)
    expect((await s0fs(['put', '-', 'w:/c.bin'], randomBytes(300_000))).code).toBe(0)
    const newest = segments(repoDir()).sort((x, y) => y.mtimeMs - x.mtimeMs)[0]
    rmSync(newest.file)
    const missing = await s0fs(['fsck'])
    expect(missing.code).toBe(8)
    expect(missing.stdout).toMatch(/segment [0-9a-f]+ is missing/)
    expect(missing.stdout).toMatch(/w:\/c\.bin/)

    for (const d of readdirSync(path.join(repoDir(), 'meta'))) {
      const dir = path.join(repoDir(), 'meta', d)
      for (const f of statSync(dir).isDirectory() ? readdirSync(dir).map((x) => path.join(dir, x)) : [dir]) flipByte(f, statSync(f).size - 5)
    }
    const pages = await s0fs(['fsck'])
    expect(pages.code).toBe(8)
    expect(pages.stdout).toMatch(/metadata page .* is unreadable/)
  }, 120_000)
})
