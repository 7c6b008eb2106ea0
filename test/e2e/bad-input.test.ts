import { randomBytes } from 'node:crypto'
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { runCli } from '../helpers/cli.js'
import { fileBackend, mountVolume, mustSh, sh, useBackend, withKeyFile } from '../helpers/mount.js'

/**
 * Bad data and bad input through the mount and the CLI: damaged segments
 * read as EIO (never wrong bytes) while the rest of the volume reads fine,
 * a repository from a newer s0fs is refused by name, files past 4 GiB, and
 * thousands of open files. (Names, paths, offsets and UTF-8: the POSIX
 * suite; full disks, second writers and dead mounts: the mount tests;
 * malformed CLI and HTTP input: the CLI and serve tests.)
 */
describe('bad data and bad input', () => {
  const ctx = useBackend(() => withKeyFile(fileBackend))
  const repoDir = () => new URL(ctx.backend.repo!).pathname

  it('a damaged segment reads as EIO through the mount; the rest of the volume reads fine', async () => {
    let m = ctx.track(await mountVolume(ctx.backend, { volume: 'damaged' }))
    const good = randomBytes(200_000)
    writeFileSync(path.join(ctx.backend.home, 'good.bin'), good)
    await mustSh(`cp ${ctx.backend.home}/good.bin ${m.mountpoint}/good.bin && sync -f ${m.mountpoint}/good.bin`)
    await m.umount()
    const before = new Set(segmentFiles(repoDir()))
    m = ctx.track(await mountVolume(ctx.backend, { volume: 'damaged', mountpoint: m.mountpoint }))
    await mustSh(`head -c 400000 /dev/urandom > ${m.mountpoint}/victim.bin && sync -f ${m.mountpoint}/victim.bin`)
    await m.umount()
    const victimSegments = segmentFiles(repoDir()).filter((f) => !before.has(f))
    expect(victimSegments.length).toBeGreaterThan(0)
    for (const f of victimSegments) {
      const data = readFileSync(f)
      data[Math.floor(data.length / 3)] ^= 0x01
      writeFileSync(f, data)
    }
    // Cold: a fresh portal, so the damaged bytes come from the bucket.
    await mustSh(`rm -rf ${ctx.backend.home}/portal`)
    m = ctx.track(await mountVolume(ctx.backend, { volume: 'damaged', mountpoint: m.mountpoint }))
    const bad = await sh(`cat ${m.mountpoint}/victim.bin > /dev/null`)
    expect(bad.code).not.toBe(0)
    expect(bad.stderr).toMatch(/Input\/output error/)
    expect(await mustSh(`sha256sum < ${m.mountpoint}/good.bin`)).toBe(await mustSh(`sha256sum < ${ctx.backend.home}/good.bin`))
    expect((await mustSh(`ls ${m.mountpoint}`)).split('\n').filter(Boolean).sort()).toEqual(['good.bin', 'victim.bin'])
    await m.umount()
  }, 180_000)

  it('refuses a repository written by a newer s0fs, naming the versions', async () => {
    const other = await fileBackend()
    try {
      const config = path.join(new URL(other.repo!).pathname, 'config')
      const parsed = JSON.parse(readFileSync(config, 'utf8'))
      writeFileSync(config, JSON.stringify({ ...parsed, version: 99 }))
      const r = await runCli(['repo', 'info', '--repo', other.repo!], { env: other.env })
      expect(r.code).not.toBe(0)
      expect(r.stderr).toMatch(/format version 99; this s0fs reads versions 1 to 2: upgrade s0fs/)
    } finally {
      other.cleanup()
    }
  }, 60_000)

  it('files past 4 GiB and thousands of open files', async () => {
    const m = ctx.track(await mountVolume(ctx.backend, { volume: 'limits' }))
    const big = await mustSh(
      `python3 -c "
import os
fd = os.open('${m.mountpoint}/over4g', os.O_RDWR | os.O_CREAT, 0o644)
os.pwrite(fd, b'head', 0)
os.pwrite(fd, b'tail', (5 << 30) - 4)
os.fsync(fd)
print(os.fstat(fd).st_size, os.pread(fd, 4, (5 << 30) - 4).decode(), os.pread(fd, 8, 1 << 32) == bytes(8))
os.close(fd)
"`,
    )
    expect(big.trim()).toBe(`${5 * 2 ** 30} tail True`)
    const many = await mustSh(
      `ulimit -n 8192 && python3 -c "
import os
d = '${m.mountpoint}/many'
os.mkdir(d)
fds = [os.open(f'{d}/f{i}', os.O_RDWR | os.O_CREAT, 0o644) for i in range(3000)]
for i, fd in enumerate(fds): os.write(fd, str(i).encode())
ok = all(os.pread(fd, 10, 0) == str(i).encode() for i, fd in enumerate(fds))
for fd in fds: os.close(fd)
print(len(fds), ok, len(os.listdir(d)))
"`,
      { timeoutMs: 120_000 },
    )
    expect(many.trim()).toBe('3000 True 3000')
    await m.umount()
  }, 180_000)
})

function segmentFiles(repoDir: string): string[] {
  const root = path.join(repoDir, 'seg')
  return readdirSync(root).flatMap((d) => readdirSync(path.join(root, d)).map((f) => path.join(root, d, f))).filter((f) => statSync(f).isFile())
}
