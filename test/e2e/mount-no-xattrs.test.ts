import { mkdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { controlRequest } from '../../src/mount/control.js'
import { mountVolume, mustSh, sh, useBackend, type Mounted } from '../helpers/mount.js'
import { compareTrees, snapshotTree } from '../helpers/tree.js'

/** Requests of one kind (lower case: "getxattr") the daemon has been sent so far (its per-operation counters). */
async function requests(m: Mounted, op: string): Promise<number> {
  const status = (await controlRequest(m.socket, { op: 'status' })) as { ops: Record<string, { count: number }> }
  return status.ops[op]?.count ?? 0
}

/**
 * `mount --no-xattrs`: extended attributes are switched off. Programs are
 * told so (EOPNOTSUPP, as on a filesystem without them), and the kernel no
 * longer asks for `security.capability` before a new file's first write and
 * before each chown.
 */
describe('mount --no-xattrs', () => {
  const ctx = useBackend()

  it('answers EOPNOTSUPP to xattr calls, and tar -x of owned files makes no getxattr requests', async () => {
    const src = path.join(ctx.backend.home, 'xattr-src')
    mkdirSync(path.join(src, 'd'), { recursive: true })
    for (let i = 0; i < 50; i++) writeFileSync(path.join(src, 'd', `f${i}`), `file ${i}\n`.repeat(100 + i))
    await mustSh(`chown -R 1234:5678 ${src} && chmod 0640 ${src}/d/f7 && tar -cf ${ctx.backend.home}/x.tar -C ${src} .`)

    const m = ctx.track(await mountVolume(ctx.backend, { volume: 'noxattr', args: ['--no-xattrs'] }))
    const file = path.join(m.mountpoint, 'plain')
    writeFileSync(file, 'data')
    for (const command of [`setfattr -n user.a -v 1 ${file}`, `getfattr -n user.a ${file}`, `getfattr -d ${file}`]) {
      const r = await sh(command)
      expect(r.code, command).not.toBe(0)
      expect(r.stderr, command).toMatch(/Operation not supported/)
    }
    // Each kind was asked once, answered ENOSYS, and never again.
    expect(await requests(m, 'getxattr')).toBe(1)
    // GNU tar as root writes every file and restores its owner: each asks for security.capability where xattrs are on.
    await mustSh(`tar -xf ${ctx.backend.home}/x.tar -C ${m.mountpoint}`)
    expect(await requests(m, 'getxattr')).toBe(1)
    await m.umount()

    // Everything tar wrote (bytes, modes, owners) is there after a remount with xattrs on again, which work.
    const again = ctx.track(await mountVolume(ctx.backend, { volume: 'noxattr', mountpoint: m.mountpoint }))
    expect(compareTrees(snapshotTree(src), snapshotTree(again.mountpoint), { mtime: 's', ignore: ['plain'] })).toEqual([])
    await mustSh(`setfattr -n user.a -v 1 ${again.mountpoint}/plain && getfattr -n user.a ${again.mountpoint}/plain`)
    // The same extraction with xattrs on: the kernel asks for security.capability at least once per file.
    const asked = await requests(again, 'getxattr')
    await mustSh(`mkdir ${again.mountpoint}/again && tar -xf ${ctx.backend.home}/x.tar -C ${again.mountpoint}/again`)
    expect(await requests(again, 'getxattr')).toBeGreaterThanOrEqual(asked + 50)
    await again.umount()
  }, 120_000)
})
