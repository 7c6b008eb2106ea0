import { createReadStream, createWriteStream, promises as fsp, type Stats } from 'node:fs'
import path from 'node:path'
import { pipeline } from 'node:stream/promises'
import { FsError } from '../../fs/index.js'
import { volumePathWithin, type FileStat, type FileTree } from '../../repo/index.js'
import type { Command, Io } from '../command.js'
import { CliError, EXIT, UsageError } from '../exit-codes.js'
import { TransferProgress } from '../progress.js'
import { writeOut } from '../stdout.js'
import { isVolumeRef, parseVolumeRef, type VolumeRef } from '../volume-access.js'
import { withFiles } from './with-files.js'

/**
 * put and get: copies between local paths and a volume, like cp -r with
 * modes and modification times kept. When the volume is mounted on this
 * node, a local path may be inside that very mount: copying a file onto
 * itself, or a directory into itself, is refused as cp refuses it (the
 * rewrite would truncate the file it is reading).
 */

interface LocalItem {
  /** Path relative to the copied root ('' for the root itself). */
  rel: string
  stat: Stats
}

/** The local tree under `root`, and the names in it that are not valid UTF-8 (volume paths are strings: those cannot be copied). */
async function walkLocal(root: string): Promise<{ items: LocalItem[]; unnamed: string[] }> {
  const items: LocalItem[] = []
  const unnamed: string[] = []
  const visit = async (rel: string) => {
    const stat = await fsp.lstat(path.join(root, rel))
    items.push({ rel, stat })
    if (!stat.isDirectory()) return
    const names = (await fsp.readdir(path.join(root, rel), { encoding: 'buffer' })).map((raw) => ({ raw, name: raw.toString('utf8') }))
    for (const { raw, name } of names.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
      if (Buffer.from(name, 'utf8').equals(raw)) await visit(rel ? `${rel}/${name}` : name)
      else unnamed.push(path.join(root, rel, name))
    }
  }
  await visit('')
  return { items, unnamed }
}

/** The volume as its mount on this node shows it: local files on `dev` are the volume's own. */
interface MountView {
  mountpoint: string
  dev: number
}

async function mountView(mountpoint: string | undefined): Promise<MountView | undefined> {
  if (!mountpoint) return undefined
  const real = await fsp.realpath(mountpoint).catch(() => undefined)
  const st = real && (await fsp.stat(real).catch(() => undefined))
  return st ? { mountpoint: real, dev: st.dev } : undefined
}

/** The volume path a local path (existing or not) stands for through the mount, if it is inside it. */
async function volumePathOf(view: MountView, local: string): Promise<string | undefined> {
  let at = path.resolve(local)
  const missing: string[] = []
  let real: string | undefined
  while (!(real = await fsp.realpath(at).catch(() => undefined))) {
    const parent = path.dirname(at)
    if (parent === at) return undefined
    missing.unshift(path.basename(at))
    at = parent
  }
  const rel = path.relative(view.mountpoint, path.join(real, ...missing))
  if (rel === '..' || rel.startsWith(`..${path.sep}`) || path.isAbsolute(rel)) return undefined
  return '/' + rel.split(path.sep).filter(Boolean).join('/')
}

/** A local file's modification time to the millisecond, cut rather than rounded (Stats.mtime rounds, and may move into the next second). */
function mtimeOf(stat: Stats): Date {
  return new Date(Math.floor(stat.mtimeMs))
}

/**
 * A failure on the local side (a Node file-system error, which names its
 * path), as a CLI error with the exit status of its kind (a missing local
 * path is "not found"). Anything else (the volume, the daemon) passes as is.
 */
function localError(what: string, err: unknown): unknown {
  const { code, path: local } = err as NodeJS.ErrnoException
  if (!code || local === undefined || err instanceof FsError || err instanceof CliError) return err
  const status = code === 'ENOENT' || code === 'ENOTDIR' ? EXIT.notFound : code === 'EEXIST' ? EXIT.exists : EXIT.error
  return new CliError(`${what}: ${(err as Error).message}`, status)
}

function notCopied(count: number): string {
  return `${count} ${count === 1 ? 'entry was' : 'entries were'} not copied: ${count === 1 ? 'its name is' : 'their names are'} not valid UTF-8`
}

function notFoundAsUndefined(err: unknown): undefined {
  if (err instanceof FsError && err.code === 'ENOENT') return undefined
  throw err
}

export const putCommand: Command = {
  path: ['put'],
  summary: 'Copy a local file or directory (or standard input, "-") into a volume.',
  description:
    'Like cp -r: into DEST if it is an existing directory (or a symlink to one), else as DEST. Modes and modification times are kept. A new file appears only once it is complete (an interrupted put leaves none); an existing file is rewritten in place, keeping its inode and links. Progress on a terminal.',
  positionals: [
    { name: 'LOCAL', description: 'a file, a directory (copied recursively), or - for standard input' },
    { name: 'VOLUME:PATH', description: 'where it goes' },
  ],
  examples: ['s0fs put ./project agent-42:/work', 'tar c . | s0fs put - agent-42:/backup.tar'],
  async run(ctx) {
    const [local, destArg] = ctx.positionals
    if (isVolumeRef(local) && !destArg.includes(':')) throw new UsageError('put copies LOCAL to VOLUME:PATH; to copy out of a volume use s0fs get')
    const dest = parseVolumeRef(destArg, 'destination')
    await withFiles(ctx, dest.name, true, async (files, opened) => {
      if (local === '-') {
        await files.write(dest.path, process.stdin)
        return
      }
      const { items, unnamed } = await walkLocal(local).catch((err) => {
        throw localError(`cannot read ${local}`, err)
      })
      for (const name of unnamed) ctx.io.err(`skipped ${name}: its name is not valid UTF-8 (copy it through the mount)\n`)
      const existing = await files.stat(dest.path, { follow: true }).catch(notFoundAsUndefined)
      const base = existing?.type === 'dir' || dest.path.endsWith('/') ? path.posix.join(existing?.path ?? dest.path, path.basename(path.resolve(local))) : dest.path
      const view = await mountView(opened.mountpoint)
      const from = view && (await volumePathOf(view, local))
      if (from && items[0].stat.isDirectory() && volumePathWithin(base, from)) {
        throw new CliError(`cannot copy a directory, ${local}, into itself, ${dest.name}:${base}`, EXIT.usage)
      }
      const total = { files: items.filter((i) => !i.stat.isDirectory()).length, bytes: items.reduce((n, i) => n + (i.stat.isFile() ? i.stat.size : 0), 0) }
      const progress = new TransferProgress(process.stderr, 'put', total)
      const dirs: { target: string; stat: Stats }[] = []
      try {
        for (const item of items) {
          const target = item.rel ? `${base}/${item.rel}` : base
          const source = path.join(local, item.rel)
          if (item.stat.isDirectory()) {
            const have = await files.stat(target).catch(notFoundAsUndefined)
            if (have && have.type !== 'dir') throw new CliError(`cannot overwrite non-directory ${dest.name}:${have.path} with directory ${source}`, EXIT.exists)
            // Writable while it is filled (cp does the same); its own mode is set last.
            if (!have) await files.mkdir(target, { parents: item.rel === '', mode: (item.stat.mode & 0o7777) | 0o700 })
            dirs.push({ target, stat: item.stat })
          } else if (item.stat.isSymbolicLink()) {
            const link = await fsp.readlink(source)
            await files.remove(target).catch(() => undefined)
            await files.symlink(target, link)
            progress.add(0, 1)
          } else if (item.stat.isFile()) {
            await putFile(files, source, item.stat, `${dest.name}:${target}`, target, view, progress)
          } else ctx.io.err(`skipped ${source}: not a file, directory or symlink\n`)
        }
        // Directory modes and times last, deepest first: filling a directory changes its mtime.
        for (const d of dirs.reverse()) await files.setAttributes(d.target, { mode: d.stat.mode & 0o7777, mtime: mtimeOf(d.stat) })
      } finally {
        progress.done()
      }
      if (unnamed.length) throw new CliError(notCopied(unnamed.length), EXIT.error)
    })
  },
}

async function putFile(files: FileTree, source: string, stat: Stats, label: string, target: string, view: MountView | undefined, progress: TransferProgress): Promise<void> {
  if (view && stat.dev === view.dev) {
    const there = await files.stat(target, { follow: true }).catch(notFoundAsUndefined)
    if (there?.ino === stat.ino) throw new CliError(`${source} and ${label} are the same file`, EXIT.usage)
  }
  const mode = stat.mode & 0o7777
  const stream = createReadStream(source, { highWaterMark: 1024 * 1024 })
  let written: FileStat
  try {
    written = await files.write(target, progress.count(stream), { mode, mtime: mtimeOf(stat) })
  } finally {
    stream.destroy()
  }
  // An existing file kept its mode through the rewrite; the copy's mode is the source's.
  if (written.mode !== mode) await files.setAttributes(written.path, { mode })
  progress.add(0, 1)
}

export const getCommand: Command = {
  path: ['get'],
  summary: 'Copy a file or directory out of a volume or snapshot (or a file to standard output, "-").',
  description: 'Like cp -r: into LOCAL if it is an existing directory, else as LOCAL. Modes and modification times are kept. Progress on a terminal.',
  positionals: [
    { name: 'VOLUME:PATH', description: 'what to copy (a snapshot name reads the snapshot)' },
    { name: 'LOCAL', description: 'a local path, or - for standard output (files only)' },
  ],
  examples: ['s0fs get agent-42:/work/report.md .', 's0fs get before-upgrade:/ ./restored'],
  async run(ctx) {
    const [srcArg, local] = ctx.positionals
    const src = parseVolumeRef(srcArg, 'source')
    await withFiles(ctx, src.name, false, (files, opened) => getInto(files, opened.mountpoint, src, local, ctx.io)).catch((err) => {
      throw localError(`cannot write ${local}`, err)
    })
  },
}

async function getInto(files: FileTree, mountpoint: string | undefined, src: VolumeRef, local: string, io: Io): Promise<void> {
  const top = await files.stat(src.path)
  const followed = top.type === 'symlink' ? await files.stat(src.path, { follow: true }) : top
  const isDir = followed.type === 'dir'
  if (local === '-') {
    if (isDir) throw new UsageError(`${src.path} is a directory; standard output takes one file (copy the directory to a local path)`)
    for await (const chunk of files.read(src.path)) if (!(await writeOut(chunk))) return
    return
  }
  const localIsDir = (await fsp.stat(local).catch(() => undefined))?.isDirectory() ?? false
  const base = localIsDir ? path.join(local, top.path === '/' ? src.name : top.name) : local
  const view = await mountView(mountpoint)
  const into = view && (await volumePathOf(view, base))
  if (into && isDir && volumePathWithin(into, followed.path)) throw new CliError(`cannot copy a directory, ${src.name}:${followed.path}, into itself, ${local}`, EXIT.usage)
  if (!isDir) {
    await getFile(files, src.name, followed, base, view, new TransferProgress(process.stderr, 'get', { files: 1, bytes: followed.size }))
    return
  }
  // Directories: list the tree first, so progress has a total.
  const tree: FileStat[] = []
  const unnamed: FileStat[] = []
  const visit = async (p: string) => {
    for (const e of await files.list(p)) {
      if (e.nameNotUtf8) unnamed.push(e)
      else tree.push(e)
      if (e.type === 'dir' && !e.nameNotUtf8) await visit(e.path)
    }
  }
  await visit(src.path)
  for (const e of unnamed) io.err(`skipped ${e.path}: its name is not valid UTF-8 (copy it through the mount)\n`)
  const root = followed.path
  const progress = new TransferProgress(process.stderr, 'get', { files: tree.filter((e) => e.type !== 'dir').length, bytes: tree.reduce((n, e) => n + (e.type === 'file' ? e.size : 0), 0) })
  try {
    await fsp.mkdir(base, { recursive: true })
    const dirs: { dest: string; stat: FileStat }[] = [{ dest: base, stat: followed }]
    for (const e of tree) {
      const dest = path.join(base, path.posix.relative(root, e.path))
      if (e.type === 'dir') {
        await fsp.mkdir(dest, { recursive: true })
        dirs.push({ dest, stat: e })
      } else if (e.type === 'symlink') {
        await fsp.rm(dest, { force: true })
        await fsp.symlink(e.target!, dest)
        progress.add(0, 1)
      } else if (e.type === 'file') await getFile(files, src.name, e, dest, view, progress)
      else io.err(`skipped ${e.path}: not a file, directory or symlink\n`)
    }
    // Directory times and modes last: filling a directory changes its mtime, and a read-only mode would stop the filling.
    for (const d of dirs.reverse()) await applyMeta(d.dest, d.stat)
  } finally {
    progress.done()
  }
  if (unnamed.length) throw new CliError(notCopied(unnamed.length), EXIT.error)
}

/** Copies the file `stat` describes (a symlink's target, already followed) to the local path `to`. */
async function getFile(files: FileTree, volume: string, stat: FileStat, to: string, view: MountView | undefined, progress: TransferProgress): Promise<void> {
  if (view) {
    const there = await fsp.stat(to).catch(() => undefined)
    if (there && there.dev === view.dev && there.ino === stat.ino) throw new CliError(`${volume}:${stat.path} and ${to} are the same file`, EXIT.usage)
  }
  await pipeline(progress.count(files.read(stat.path)), createWriteStream(to))
  progress.add(0, 1)
  await applyMeta(to, stat)
}

async function applyMeta(to: string, stat: FileStat): Promise<void> {
  await fsp.chmod(to, stat.mode & 0o7777)
  const mtime = new Date(stat.mtime)
  await fsp.utimes(to, mtime, mtime)
}
