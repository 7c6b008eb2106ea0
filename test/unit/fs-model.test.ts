import fc from 'fast-check'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FsError, isDir, isLnk, ROOT, ROOT_INO, S_IFMT, S_IFREG, type FileSystem } from '../../src/fs/index.js'
import type { Repository, VolumeSession } from '../../src/repo/index.js'
import { describe as describeNode, ModelError, ModelFs, type Snapshot } from '../helpers/model.js'
import { testRepo } from '../helpers/repo.js'

/**
 * Model-based property test: random operation sequences run on s0fs's
 * filesystem core and on a plain reference model must give the same results
 * and errors, the same tree afterwards — also across commit + reopen, and
 * across a simulated crash, after which the volume must equal the model as of
 * some point between the last fsync and the crash (nothing fsynced lost,
 * nothing torn).
 */

const NAMES = ['a', 'b', 'c', 'd']
const pathArb = fc.array(fc.constantFrom(...NAMES), { minLength: 1, maxLength: 3 })
/** Data as (length, seed): counterexamples stay short, the bytes are still varied. */
const dataArb = (max: number) => fc.record({ len: fc.integer({ min: 1, max }), seed: fc.integer({ min: 0, max: 255 }) })
type Data = { len: number; seed: number }
function bytes(d: Data): Buffer {
  const out = Buffer.allocUnsafe(d.len)
  let x = d.seed * 2654435761 + 1
  for (let i = 0; i < d.len; i++) {
    x = (x * 1103515245 + 12345) >>> 0
    out[i] = x >>> 24
  }
  return out
}

type Op =
  | { op: 'mkdir' | 'create' | 'unlink' | 'rmdir' | 'read'; path: string[] }
  | { op: 'write'; path: string[]; off: number; data: Data }
  | { op: 'truncate'; path: string[]; size: number }
  | { op: 'rename'; path: string[]; to: string[]; flags: number }
  | { op: 'link'; path: string[]; to: string[] }
  | { op: 'symlink'; path: string[]; target: string }
  | { op: 'chmod'; path: string[]; mode: number }
  | { op: 'setxattr'; path: string[]; name: string; value: Data; flags: number }
  | { op: 'removexattr'; path: string[]; name: string }
  | { op: 'fsync' | 'commit' | 'reopen' | 'crash' }

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant('mkdir' as const), path: pathArb }) },
  { weight: 5, arbitrary: fc.record({ op: fc.constant('create' as const), path: pathArb }) },
  {
    weight: 8,
    arbitrary: fc.oneof(
      { weight: 12, arbitrary: fc.record({ op: fc.constant('write' as const), path: pathArb, off: fc.integer({ min: 0, max: 70_000 }), data: dataArb(6000) }) },
      { weight: 1, arbitrary: fc.record({ op: fc.constant('write' as const), path: pathArb, off: fc.integer({ min: 0, max: 3_000_000 }), data: dataArb(1_500_000) }) },
    ),
  },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('truncate' as const), path: pathArb, size: fc.integer({ min: 0, max: 100_000 }) }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('read' as const), path: pathArb }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('unlink' as const), path: pathArb }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('rmdir' as const), path: pathArb }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('rename' as const), path: pathArb, to: pathArb, flags: fc.constantFrom(0, 0, 1, 2) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('link' as const), path: pathArb, to: pathArb }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('symlink' as const), path: pathArb, target: fc.constantFrom('a', '../b', '/x/y') }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('chmod' as const), path: pathArb, mode: fc.integer({ min: 0, max: 0o7777 }) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('setxattr' as const), path: pathArb, name: fc.constantFrom('user.x', 'user.y'), value: dataArb(40), flags: fc.constantFrom(0, 1, 2) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('removexattr' as const), path: pathArb, name: fc.constantFrom('user.x', 'user.y') }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('fsync' as const) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('commit' as const) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('reopen' as const) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('crash' as const) }) },
)

const b = (s: string) => Buffer.from(s)

async function resolveDir(fs: FileSystem, parts: string[]): Promise<number> {
  let ino = ROOT_INO
  for (const part of parts) ino = (await fs.lookup(ROOT, ino, b(part))).ino
  if (!isDir((await fs.getattr(ino)).mode)) throw Object.assign(new Error('ENOTDIR'), { code: 'ENOTDIR' })
  return ino
}

async function resolve(fs: FileSystem, parts: string[]): Promise<number> {
  const dir = await resolveDir(fs, parts.slice(0, -1))
  return (await fs.lookup(ROOT, dir, b(parts[parts.length - 1]))).ino
}

/** Runs one operation on s0fs; returns a comparable outcome ("ok", data, or the errno name). */
async function runReal(fs: FileSystem, o: Op): Promise<string> {
  try {
    switch (o.op) {
      case 'mkdir':
        await fs.mkdir(ROOT, await resolveDir(fs, o.path.slice(0, -1)), b(o.path.at(-1)!), 0o755)
        return 'ok'
      case 'create':
        await fs.create(ROOT, await resolveDir(fs, o.path.slice(0, -1)), b(o.path.at(-1)!), 0o644)
        return 'ok'
      case 'write':
        await fs.write(ROOT, await resolve(fs, o.path), o.off, bytes(o.data))
        return 'ok'
      case 'truncate':
        await fs.setattr(ROOT, await resolve(fs, o.path), { size: o.size })
        return 'ok'
      case 'read': {
        const ino = await resolve(fs, o.path)
        const inode = await fs.getattr(ino)
        if (isLnk(inode.mode)) return 'data:'
        return 'data:' + (await fs.read(ino, 0, inode.size + 10)).toString('hex')
      }
      case 'unlink':
        await fs.unlink(ROOT, await resolveDir(fs, o.path.slice(0, -1)), b(o.path.at(-1)!))
        return 'ok'
      case 'rmdir':
        await fs.rmdir(ROOT, await resolveDir(fs, o.path.slice(0, -1)), b(o.path.at(-1)!))
        return 'ok'
      case 'rename': {
        const src = await resolveDir(fs, o.path.slice(0, -1))
        const dst = await resolveDir(fs, o.to.slice(0, -1))
        await fs.rename(ROOT, src, b(o.path.at(-1)!), dst, b(o.to.at(-1)!), o.flags)
        return 'ok'
      }
      case 'link': {
        const ino = await resolve(fs, o.path)
        await fs.link(ROOT, ino, await resolveDir(fs, o.to.slice(0, -1)), b(o.to.at(-1)!))
        return 'ok'
      }
      case 'symlink':
        await fs.symlink(ROOT, await resolveDir(fs, o.path.slice(0, -1)), b(o.path.at(-1)!), b(o.target))
        return 'ok'
      case 'chmod': {
        const ino = await resolve(fs, o.path)
        const inode = await fs.getattr(ino)
        await fs.setattr(ROOT, ino, { mode: (inode.mode & S_IFMT) | o.mode })
        return 'ok'
      }
      case 'setxattr':
        await fs.setxattr(ROOT, await resolve(fs, o.path), b(o.name), bytes(o.value), o.flags)
        return 'ok'
      case 'removexattr':
        await fs.removexattr(ROOT, await resolve(fs, o.path), b(o.name))
        return 'ok'
      default:
        return 'ok'
    }
  } catch (err) {
    const code = (err as FsError).code
    if (!code) throw err
    return code
  }
}

function runModel(m: ModelFs, o: Op): string {
  try {
    switch (o.op) {
      case 'mkdir':
        m.mkdir(o.path)
        break
      case 'create':
        m.create(o.path)
        break
      case 'write':
        m.write(o.path, o.off, bytes(o.data))
        break
      case 'truncate':
        m.truncate(o.path, o.size)
        break
      case 'read':
        return 'data:' + m.read(o.path).toString('hex')
      case 'unlink':
        m.unlink(o.path)
        break
      case 'rmdir':
        m.rmdir(o.path)
        break
      case 'rename':
        m.rename(o.path, o.to, o.flags)
        break
      case 'link':
        m.link(o.path, o.to)
        break
      case 'symlink':
        m.symlink(o.path, o.target)
        break
      case 'chmod':
        m.chmod(o.path, o.mode)
        break
      case 'setxattr':
        m.setxattr(o.path, o.name, bytes(o.value), o.flags)
        break
      case 'removexattr':
        m.removexattr(o.path, o.name)
        break
    }
    return 'ok'
  } catch (err) {
    if (err instanceof ModelError) return err.code
    throw err
  }
}

async function snapshotReal(fs: FileSystem): Promise<Snapshot> {
  const out: Snapshot = {}
  const walk = async (ino: number, path: string) => {
    const inode = await fs.getattr(ino)
    const type = isDir(inode.mode) ? 'dir' : isLnk(inode.mode) ? 'symlink' : (inode.mode & S_IFMT) === S_IFREG ? 'file' : 'other'
    const xattrs = new Map<string, Buffer>()
    for (const name of await fs.listxattr(ROOT, ino)) xattrs.set(name.toString(), await fs.getxattr(ROOT, ino, name))
    const data = type === 'file' ? await fs.read(ino, 0, inode.size) : Buffer.alloc(0)
    out[path || '/'] = describeNode(type, inode.mode, inode.nlink, data, inode.target?.toString(), xattrs)
    if (type === 'dir') {
      const entries = (await fs.readdir(ROOT, ino, 0, 10_000)).filter((e) => e.name.toString() !== '.' && e.name.toString() !== '..')
      for (const e of entries.sort((x, y) => (x.name.toString() < y.name.toString() ? -1 : 1))) await walk(e.ino, `${path}/${e.name.toString()}`)
    }
  }
  await walk(ROOT_INO, '')
  return out
}

describe('filesystem core against a reference model', () => {
  let t: Awaited<ReturnType<typeof testRepo>>
  let counter = 0
  beforeAll(async () => {
    t = await testRepo()
  })
  afterAll(async () => {
    await t.cleanup()
  })

  it('matches the model, across commits, reopens and crashes', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 10, maxLength: 60 }), async (ops) => {
        const repo: Repository = t.repo
        const name = `m${counter++}`
        await repo.createVolume(name)
        let session: VolumeSession = await repo.openVolume(name, { portalDir: t.portalDir })
        let model = new ModelFs()
        /** Model states since the last fsync: after a crash the volume must equal one of them. */
        let sinceSync: ModelFs[] = [model.clone()]
        try {
          for (const o of ops) {
            if (o.op === 'fsync' || o.op === 'commit') {
              if (o.op === 'fsync') await session.syncLocal()
              else await session.commit()
              sinceSync = [model.clone()]
              continue
            }
            if (o.op === 'reopen') {
              await session.close()
              session = await repo.openVolume(name, { portalDir: t.portalDir })
              expect(await snapshotReal(session.fs)).toEqual(model.snapshot())
              sinceSync = [model.clone()]
              continue
            }
            if (o.op === 'crash') {
              await session.abandon()
              session = await repo.openVolume(name, { portalDir: t.portalDir })
              const recovered = JSON.stringify(await snapshotReal(session.fs))
              // Latest first: usually everything written survived.
              const match = [...sinceSync].reverse().find((m) => JSON.stringify(m.snapshot()) === recovered)
              expect(match, `recovered state is not a state between the last fsync and the crash:\n${recovered}`).toBeDefined()
              // Carry on from what survived.
              model = match!.clone()
              sinceSync = [model.clone()]
              continue
            }
            const expected = runModel(model, o)
            const actual = await runReal(session.fs, o)
            if (process.env.S0FS_FC_DEBUG) console.log(name, JSON.stringify(o), expected, actual)
            expect(actual, JSON.stringify(o)).toBe(expected)
            sinceSync.push(model.clone())
          }
          expect(await snapshotReal(session.fs)).toEqual(model.snapshot())
        } finally {
          await session.close().catch(() => undefined)
        }
      }),
      { numRuns: Number(process.env.S0FS_FC_RUNS ?? 40), endOnFailure: true, ...(process.env.S0FS_FC_SEED ? { seed: Number(process.env.S0FS_FC_SEED), path: process.env.S0FS_FC_PATH } : {}) },
    )
  }, 300_000)
})
