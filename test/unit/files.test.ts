import { afterEach, describe, expect, it } from 'vitest'
import { FsError, ROOT, ROOT_INO } from '../../src/fs/index.js'
import { normalizeVolumePath, resolveSymlinks, volumePathComponents, type FileChange } from '../../src/repo/index.js'
import { testRepo } from '../helpers/repo.js'

async function collect(iter: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const p of iter) parts.push(p)
  return Buffer.concat(parts)
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p
    return 'ok'
  } catch (err) {
    if (err instanceof FsError) return err.code
    throw err
  }
}

describe('volume paths', () => {
  it('cleans paths lexically and refuses to climb above the root', () => {
    expect(normalizeVolumePath('')).toBe('/')
    expect(normalizeVolumePath('a//b/./c/')).toBe('/a/b/c')
    expect(normalizeVolumePath('/a/b/../c')).toBe('/a/c')
    expect(volumePathComponents('/')).toEqual([])
    for (const bad of ['..', '/..', 'a/../..', '/a/../../etc/passwd']) expect(() => normalizeVolumePath(bad)).toThrow(/escapes the volume root/)
    expect(() => normalizeVolumePath('a\0b')).toThrow(/NUL/)
    expect(() => normalizeVolumePath('x'.repeat(256))).toThrow(/limit is 255/)
    expect(() => normalizeVolumePath('/a'.repeat(2100))).toThrow(/limit is 4095/)
  })

  it('follows symlinks as if the volume root were "/"', async () => {
    const links: Record<string, string> = { 'abs': '/etc', 'up': '../../../x', 'loop': 'loop', 'd/rel': '../t' }
    const read = async (c: readonly string[]) => links[c.join('/')]
    expect(await resolveSymlinks(['abs', 'passwd'], read, true)).toEqual(['etc', 'passwd'])
    expect(await resolveSymlinks(['up'], read, true)).toEqual(['x'])
    expect(await resolveSymlinks(['d', 'rel'], read, true)).toEqual(['t'])
    expect(await resolveSymlinks(['d', 'rel'], read, false)).toEqual(['d', 'rel'])
    await expect(resolveSymlinks(['loop'], read, true)).rejects.toThrow(/too many symbolic links/)
  })
})

describe('VolumeFiles (library file access without a mount)', () => {
  let cleanup: (() => Promise<void>) | undefined
  afterEach(async () => {
    await cleanup?.()
    cleanup = undefined
  })

  it('writes, reads ranges, lists, moves and removes; changes survive a reopen', async () => {
    const t = await testRepo()
    cleanup = t.cleanup
    await t.repo.createVolume('v')
    const session = await t.repo.openVolume('v', { portalDir: t.portalDir })
    const changes: FileChange[] = []
    const files = session.files({ onChange: (c) => changes.push(c) })
    const data = Buffer.alloc(3 * 1024 * 1024 + 17, 'abcdefgh')
    await files.mkdir('/src/deep', { parents: true })
    await files.mkdir('/src/deep', { parents: true }) // existing: fine with parents
    expect(await code(files.mkdir('/src'))).toBe('EEXIST')
    const st = await files.write('/src/deep/data.bin', data, { mode: 0o600, mtime: new Date('2020-01-01T00:00:00.123Z') })
    expect(st).toMatchObject({ path: '/src/deep/data.bin', type: 'file', size: data.length, mode: 0o600, mtime: '2020-01-01T00:00:00.123Z' })
    expect((await collect(files.read('/src/deep/data.bin'))).equals(data)).toBe(true)
    expect((await collect(files.read('/src/deep/data.bin', { offset: 1_000_000, length: 10 }))).equals(data.subarray(1_000_000, 1_000_010))).toBe(true)
    // A stream source, written over an existing file (truncates).
    async function* pieces() {
      yield Buffer.from('hello ')
      yield Buffer.from('world')
    }
    await files.write('/src/deep/data.bin', pieces())
    expect((await collect(files.read('/src/deep/data.bin'))).toString()).toBe('hello world')
    await files.symlink('/link', 'src/deep')
    expect((await files.stat('/link')).type).toBe('symlink')
    expect((await files.list('/link')).map((e) => e.name)).toEqual(['data.bin'])
    expect((await collect(files.read('/link/data.bin'))).toString()).toBe('hello world')
    await files.move('/src/deep/data.bin', '/moved.bin')
    expect(await code(files.stat('/src/deep/data.bin'))).toBe('ENOENT')
    expect(await code(files.move('/src', '/src/deep/inside'))).toBe('EINVAL')
    expect(await code(files.remove('/src'))).toBe('ENOTEMPTY')
    expect(await files.remove('/src', { recursive: true })).toBe(2)
    expect(await code(files.remove('/'))).toBe('EINVAL')
    expect((await files.list('/')).map((e) => `${e.name}:${e.type}`)).toEqual(['link:symlink', 'moved.bin:file'])
    expect(changes.map((c) => c.type)).toEqual(['create', 'create', 'create', 'modify', 'create', 'move', 'remove', 'remove'])
    expect(changes.find((c) => c.type === 'move')).toMatchObject({ from: '/src/deep/data.bin', path: '/moved.bin' })
    await session.close()

    const reader = await t.repo.openVolume('v', { portalDir: t.portalDir, readOnly: true })
    const ro = reader.files()
    expect(ro.writable).toBe(false)
    expect((await collect(ro.read('/moved.bin'))).toString()).toBe('hello world')
    expect(await code(ro.write('/x', Buffer.from('x')))).toBe('EROFS')
  })

  it('names a new file only once it is whole; an interrupted write leaves nothing, a rewrite keeps the inode', async () => {
    const t = await testRepo()
    cleanup = t.cleanup
    await t.repo.createVolume('w')
    let session = await t.repo.openVolume('w', { portalDir: t.portalDir })
    let files = session.files()
    // A source the test feeds by hand, so it can look at the tree mid-write.
    const gate = () => {
      let open!: () => void
      const opened = new Promise<void>((resolve) => (open = resolve))
      return { open, opened }
    }
    const first = gate()
    const rest = gate()
    async function* slow(fail?: Error) {
      yield Buffer.alloc(3 * 1024 * 1024, 1)
      first.open()
      await rest.opened
      if (fail) throw fail
      yield Buffer.from('tail')
    }
    const writing = files.write('/new.bin', slow(), { mode: 0o640 })
    await first.opened
    expect(await code(files.stat('/new.bin'))).toBe('ENOENT')
    expect(await files.list('/')).toEqual([])
    rest.open()
    expect(await writing).toMatchObject({ path: '/new.bin', size: 3 * 1024 * 1024 + 4, mode: 0o640, nlink: 1 })
    const ino = (await files.stat('/new.bin')).ino

    // The source fails half-way: no name, and the unnamed file is gone (nothing to purge on reopen).
    const failing = files.write('/broken.bin', (async function* () {
      yield Buffer.alloc(1024, 2)
      throw new Error('source went away')
    })())
    await expect(failing).rejects.toThrow('source went away')
    expect(await code(files.stat('/broken.bin'))).toBe('ENOENT')
    expect(await code(files.write('/new.bin', Buffer.from('x'), { exclusive: true }))).toBe('EEXIST')
    await files.symlink('/dangling', 'nowhere')
    await expect(files.write('/dangling', Buffer.from('x'))).rejects.toThrow(/symbolic link to a missing file/)
    await files.remove('/dangling')

    // A replacement (HTTP PUT) is a new inode with the old one's mode and xattrs…
    await files.write('/repl.txt', Buffer.from('old'), { mode: 0o600 })
    const old = await files.stat('/repl.txt')
    await session.fs.setxattr(ROOT, old.ino, Buffer.from('user.tag'), Buffer.from('kept'))
    const replaced = await files.write('/repl.txt', Buffer.from('new'), { replace: true })
    expect(replaced.ino).not.toBe(old.ino)
    expect(replaced.mode).toBe(0o600)
    expect((await session.fs.getxattr(ROOT, replaced.ino, Buffer.from('user.tag'))).toString()).toBe('kept')
    // …unless other names share the file: then it is rewritten in place, and they see the new bytes.
    await files.link('/repl-link.txt', '/repl.txt')
    expect((await files.write('/repl.txt', Buffer.from('newer'), { replace: true })).ino).toBe(replaced.ino)
    expect((await collect(files.read('/repl-link.txt'))).toString()).toBe('newer')
    await files.remove('/repl.txt')
    await files.remove('/repl-link.txt')

    // Rewriting an existing file truncates it in place: same inode, its hard link sees the new bytes.
    await files.link('/alias.bin', '/new.bin')
    expect(await files.write('/new.bin', Buffer.from('short'))).toMatchObject({ ino, size: 5, nlink: 2 })
    expect((await collect(files.read('/alias.bin'))).toString()).toBe('short')
    await session.close()

    session = await t.repo.openVolume('w', { portalDir: t.portalDir })
    expect(session.recovery?.orphansPurged ?? 0).toBe(0)
    files = session.files()
    expect((await files.list('/')).map((e) => e.name)).toEqual(['alias.bin', 'new.bin'])
    await session.close()
  })

  it('nothing can be moved or linked into a directory removed while something still holds it', async () => {
    const t = await testRepo()
    cleanup = t.cleanup
    await t.repo.createVolume('d')
    const session = await t.repo.openVolume('d', { portalDir: t.portalDir })
    const fs = session.fs
    const name = (s: string) => Buffer.from(s)
    const dir = await fs.mkdir(ROOT, ROOT_INO, name('dir'), 0o755)
    const file = await fs.create(ROOT, ROOT_INO, name('file'), 0o644)
    fs.pin(dir.ino) // a process's working directory
    await session.files().remove('/dir') // around the kernel, as the CLI does
    expect(await code(fs.rename(ROOT, ROOT_INO, name('file'), dir.ino, name('moved')))).toBe('ENOENT')
    expect(await code(fs.link(ROOT, file.ino, dir.ino, name('linked')))).toBe('ENOENT')
    expect(await code(fs.create(ROOT, dir.ino, name('new'), 0o644))).toBe('ENOENT')
    expect((await session.files().stat('/file')).nlink).toBe(1)
    await fs.unpin(dir.ino)
    await session.close()
  })

  it('applies the caller\'s permissions', async () => {
    const t = await testRepo()
    cleanup = t.cleanup
    await t.repo.createVolume('p')
    const session = await t.repo.openVolume('p', { portalDir: t.portalDir })
    await session.files().write('/secret', Buffer.from('root only'), { mode: 0o600 })
    const user = session.files({ cred: { uid: 1000, gid: 1000, groups: [] } })
    expect(await code(collect(user.read('/secret')))).toBe('EACCES')
    expect(await code(user.write('/mine', Buffer.from('x')))).toBe('EACCES') // root-owned 0755 root directory
    await session.close()
  })
})
