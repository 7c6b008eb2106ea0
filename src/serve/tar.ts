import { posix } from 'node:path'
import { pipeline } from 'node:stream/promises'
import type { Writable } from 'node:stream'
import tar from 'tar-stream'
import { FsError } from '../fs/index.js'
import { joinVolumePath, volumePathComponents, volumePathWithin, type FileStat, type FileTree } from '../repo/index.js'
import { HttpError } from './http.js'

/**
 * Tar export and import of a directory of a volume (`tar-stream`, the
 * streaming tar codec most Node tools use: no temporary files either way).
 */

/**
 * Streams the directory `dir` (recursively) as a tar archive with paths
 * relative to it. A client that goes away, or a file that cannot be read,
 * ends the archive early and fails this call; nothing else. Names that are
 * not valid UTF-8 cannot be read by path and are left out.
 */
export async function exportTar(files: FileTree, dir: string, out: Writable): Promise<void> {
  const pack = tar.pack()
  let failure: Error | undefined
  const done = pipeline(pack, out).catch((err: Error) => {
    failure ??= err
  })
  // Every wait also ends when the pipeline does (a client gone away never drains).
  const step = async (waiting: Promise<void>) => {
    await Promise.race([waiting, done])
    if (failure) throw failure
  }
  const header = (s: FileStat, name: string) => ({ name, mode: s.mode, uid: s.uid, gid: s.gid, mtime: new Date(s.mtime) })
  const visit = async (path: string, rel: string): Promise<void> => {
    for (const e of await files.list(path)) {
      if (e.nameNotUtf8) continue
      const name = rel ? `${rel}/${e.name}` : e.name
      if (e.type === 'dir') {
        await step(entry(pack, { ...header(e, name), type: 'directory' }))
        await visit(e.path, name)
      } else if (e.type === 'symlink') {
        await step(entry(pack, { ...header(e, name), type: 'symlink', linkname: e.target }))
      } else if (e.type === 'file') {
        const stream = pack.entry({ ...header(e, name), type: 'file', size: e.size })
        // Destroying the pack (the client left) fails its open entry: that is the failure step() reports.
        stream.on('error', (err: Error) => {
          failure ??= err
        })
        for await (const chunk of files.read(e.path)) if (!stream.write(chunk)) await step(new Promise<void>((r) => stream.once('drain', () => r())))
        await step(new Promise<void>((resolve, reject) => stream.end((err?: Error | null) => (err ? reject(err) : resolve()))))
      }
    }
  }
  try {
    await visit(dir, '')
    pack.finalize()
  } catch (err) {
    pack.destroy(err as Error)
    await done
    throw err
  }
  await done
  if (failure) throw failure
}

function entry(pack: tar.Pack, headers: Parameters<tar.Pack['entry']>[0]): Promise<void> {
  return new Promise((resolve, reject) => pack.entry(headers, (err) => (err ? reject(err) : resolve())))
}

export interface ImportReport {
  files: number
  dirs: number
  links: number
  bytes: number
}

/** Extracts a tar archive into `dir` (created if missing). Entries that would land outside `dir` are refused. */
export async function importTar(files: FileTree, dir: string, body: AsyncIterable<Buffer>): Promise<ImportReport> {
  const base = volumePathComponents(dir)
  const basePath = joinVolumePath(base)
  await files.mkdir(basePath, { parents: true })
  const realBase = (await files.stat(basePath, { follow: true })).path
  const extract = tar.extract()
  const report: ImportReport = { files: 0, dirs: 0, links: 0, bytes: 0 }
  const dirTimes: { path: string; mode: number; mtime?: Date }[] = []
  const feeding = (async () => {
    try {
      // streamx streams: write() says when to wait for 'drain'; end() with no data.
      const sink = extract as unknown as { write(b: Buffer): boolean; end(): void; once(e: 'drain', f: () => void): void }
      for await (const chunk of body) if (!sink.write(chunk)) await new Promise<void>((r) => sink.once('drain', () => r()))
      sink.end()
    } catch (err) {
      extract.destroy(err as Error)
    }
  })()
  // (Nothing may be awaited between here and the loop below: the first entry must find its reader.)
  // An archive may create a symlink and then write through it: every entry's nearest existing directory must
  // still be inside `base` once symlinks are followed (the base itself, "./" in `tar c .`, is inside).
  const confine = async (target: string, name: string) => {
    if (target === basePath) return
    for (let at = posix.dirname(target); ; at = posix.dirname(at)) {
      const st = await files.stat(at, { follow: true }).catch((err: unknown) => {
        if (err instanceof FsError && (err.code === 'ENOENT' || err.code === 'ENOTDIR')) return undefined
        throw err
      })
      if (!st) continue
      if (!volumePathWithin(st.path, realBase)) {
        throw new HttpError(400, 'bad_archive', `archive entry ${JSON.stringify(name)} would be written through a symbolic link out of ${basePath}`)
      }
      return
    }
  }
  const entries = (async function* () {
    try {
      yield* extract
    } catch (err) {
      if (err instanceof HttpError || err instanceof FsError) throw err
      throw new HttpError(400, 'bad_archive', `the archive is not a readable tar: ${(err as Error).message}`)
    }
  })()
  for await (const item of entries) {
    const h = item.header
    const target = inside(base, h.name)
    const mtime = h.mtime
    if (target === basePath && h.type !== 'directory') throw new HttpError(400, 'bad_archive', `archive entry ${JSON.stringify(h.name)} names the target directory itself`)
    await confine(target, h.name)
    if (h.type === 'link') await confine(inside(base, h.linkname ?? ''), h.linkname ?? '')
    if (h.type === 'directory') {
      await files.mkdir(target, { parents: true })
      dirTimes.push({ path: target, mode: h.mode ?? 0o755, mtime })
      report.dirs++
      item.resume()
    } else if (h.type === 'file' || h.type === 'contiguous-file') {
      await files.remove(target).catch(() => undefined)
      const stat = await files.write(target, item as unknown as AsyncIterable<Buffer>, { mode: h.mode ?? 0o644, mtime })
      if (h.uid !== undefined || h.gid !== undefined) await files.setAttributes(target, { uid: h.uid, gid: h.gid })
      report.files++
      report.bytes += stat.size
    } else if (h.type === 'symlink') {
      await files.remove(target).catch(() => undefined)
      await files.symlink(target, h.linkname ?? '')
      report.links++
      item.resume()
    } else if (h.type === 'link') {
      await files.remove(target).catch(() => undefined)
      await files.link(target, inside(base, h.linkname ?? ''))
      report.links++
      item.resume()
    } else {
      item.resume() // devices, fifos, pax extras: not stored
    }
  }
  await feeding
  for (const d of dirTimes.reverse()) await files.setAttributes(d.path, { mode: d.mode, mtime: d.mtime })
  return report
}

/** The volume path of an archive entry under `base`; ".." that leaves `base` is an error (no tar slip). */
function inside(base: string[], name: string): string {
  const parts = [...base]
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue
    if (part === '..') {
      if (parts.length === base.length) throw new HttpError(400, 'bad_archive', `archive entry ${JSON.stringify(name)} would be written outside ${joinVolumePath(base)}`)
      parts.pop()
    } else parts.push(part)
  }
  return joinVolumePath(volumePathComponents(joinVolumePath(parts)))
}
