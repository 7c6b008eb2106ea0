import { once } from 'node:events'
import { createReadStream, createWriteStream, promises as fsp, type Stats } from 'node:fs'
import path from 'node:path'
import { pipeline } from 'node:stream/promises'
import { FsError } from '../../fs/index.js'
import type { FileStat, FileTree } from '../../repo/index.js'
import type { Command, CommandContext } from '../command.js'
import { CliError, EXIT, UsageError } from '../exit-codes.js'
import { TransferProgress } from '../progress.js'
import { openFiles, parseVolumeRef, isVolumeRef, type VolumeRef } from '../volume-access.js'
import { openRepo } from './repo.js'

/**
 * File access without a mount: ls, stat, cat, rm, mv, mkdir, put, get on
 * VOLUME:PATH (a snapshot name reads the snapshot). Writes go through the
 * volume's mount daemon when it is mounted on this node, else take the
 * volume's lease for the duration of the command and commit at the end.
 */

const json = { json: { type: 'boolean' as const, description: 'print machine-readable JSON' } }

/** Opens the repository and the volume, runs `fn`, then commits and closes. */
async function withFiles<T>(ctx: CommandContext, name: string, write: boolean, fn: (files: FileTree) => Promise<T>): Promise<T> {
  const repo = await openRepo(ctx)
  try {
    const opened = await openFiles(repo, name, { write, purpose: `s0fs ${ctx.command} (pid ${process.pid})` })
    try {
      return await fn(opened.files)
    } finally {
      await opened.close()
    }
  } finally {
    await repo.close()
  }
}

function sameVolume(refs: VolumeRef[]): string {
  const names = new Set(refs.map((r) => r.name))
  if (names.size > 1) throw new UsageError(`all paths must be in one volume (got ${[...names].join(', ')})`)
  return refs[0].name
}

function modeString(s: FileStat): string {
  const type = { file: '-', dir: 'd', symlink: 'l', other: '?' }[s.type]
  let out = type
  for (let shift = 6; shift >= 0; shift -= 3) {
    const bits = (s.mode >> shift) & 7
    out += (bits & 4 ? 'r' : '-') + (bits & 2 ? 'w' : '-') + (bits & 1 ? 'x' : '-')
  }
  return out
}

function longRows(entries: FileStat[]): string {
  const rows = entries.map((e) => [modeString(e), String(e.nlink), String(e.uid), String(e.gid), String(e.size), e.mtime, e.name + (e.target !== undefined ? ` -> ${e.target}` : '')])
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => r[i].length))) ?? []
  return rows.map((r) => r.map((c, i) => (i === 6 ? c : i >= 1 && i <= 4 ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join(' ')).join('\n') + (rows.length ? '\n' : '')
}

export const lsCommand: Command = {
  path: ['ls'],
  summary: 'List a directory of a volume or snapshot (VOLUME:PATH).',
  positionals: [{ name: 'VOLUME:PATH', description: 'e.g. agent-42:/src, or a snapshot: before-upgrade:/', variadic: true }],
  options: { long: { type: 'boolean', short: 'l', description: 'mode, links, owner, group, size, mtime' }, ...json },
  async run(ctx) {
    if (ctx.positionals.length === 0) throw new UsageError('missing VOLUME:PATH')
    const refs = ctx.positionals.map((a) => parseVolumeRef(a))
    const listings = await withFiles(ctx, sameVolume(refs), false, async (files) => {
      const out: { path: string; entries: FileStat[] }[] = []
      for (const ref of refs) {
        const stat = await files.stat(ref.path)
        const isDir = stat.type === 'dir' || (stat.type === 'symlink' && (await files.stat(ref.path, { follow: true }).catch(() => stat)).type === 'dir')
        out.push({ path: stat.path, entries: isDir ? await files.list(ref.path) : [stat] })
      }
      return out
    })
    if (ctx.values.json) {
      ctx.io.out(JSON.stringify(refs.length === 1 ? listings[0].entries : listings, null, 2) + '\n')
      return
    }
    for (const [i, l] of listings.entries()) {
      if (listings.length > 1) ctx.io.out(`${i ? '\n' : ''}${refs[i].name}:${l.path}:\n`)
      ctx.io.out(ctx.values.long ? longRows(l.entries) : l.entries.map((e) => e.name + '\n').join(''))
    }
  },
}

export const statCommand: Command = {
  path: ['stat'],
  summary: 'Show a path\'s type, mode, owner, size and times (a symlink itself, not its target).',
  positionals: [{ name: 'VOLUME:PATH', description: 'e.g. agent-42:/src/main.c' }],
  options: json,
  async run(ctx) {
    const ref = parseVolumeRef(ctx.positionals[0])
    const s = await withFiles(ctx, ref.name, false, (files) => files.stat(ref.path))
    if (ctx.values.json) ctx.io.out(JSON.stringify(s, null, 2) + '\n')
    else
      ctx.io.out(
        [
          `path    ${s.path}${s.target !== undefined ? ` -> ${s.target}` : ''}`,
          `type    ${s.type}`,
          `size    ${s.size}`,
          `mode    ${modeString(s)} (${s.mode.toString(8).padStart(4, '0')})`,
          `owner   uid ${s.uid}, gid ${s.gid}`,
          `links   ${s.nlink}`,
          `inode   ${s.ino}`,
          `mtime   ${s.mtime}`,
          '',
        ].join('\n'),
      )
  },
}

async function writeOut(chunk: Buffer): Promise<void> {
  if (!process.stdout.write(chunk)) await once(process.stdout, 'drain')
}

export const catCommand: Command = {
  path: ['cat'],
  summary: 'Write files of a volume or snapshot to standard output.',
  positionals: [{ name: 'VOLUME:PATH', description: 'one or more files', variadic: true }],
  async run(ctx) {
    if (ctx.positionals.length === 0) throw new UsageError('missing VOLUME:PATH')
    const refs = ctx.positionals.map((a) => parseVolumeRef(a))
    await withFiles(ctx, sameVolume(refs), false, async (files) => {
      for (const ref of refs) for await (const chunk of files.read(ref.path)) await writeOut(chunk)
    })
  },
}

export const rmCommand: Command = {
  path: ['rm'],
  summary: 'Remove files (and with -r, directories) from a volume.',
  positionals: [{ name: 'VOLUME:PATH', description: 'one or more paths', variadic: true }],
  options: {
    recursive: { type: 'boolean', short: 'r', description: 'remove directories and what they hold' },
    force: { type: 'boolean', short: 'f', description: 'a path that does not exist is not an error' },
  },
  async run(ctx) {
    if (ctx.positionals.length === 0) throw new UsageError('missing VOLUME:PATH')
    const refs = ctx.positionals.map((a) => parseVolumeRef(a))
    await withFiles(ctx, sameVolume(refs), true, async (files) => {
      for (const ref of refs) {
        try {
          await files.remove(ref.path, { recursive: ctx.values.recursive === true })
        } catch (err) {
          if (ctx.values.force && err instanceof FsError && err.code === 'ENOENT') continue
          if (err instanceof FsError && err.code === 'EISDIR') throw new FsError('EISDIR', `${ref.path} is a directory (use -r)`)
          throw err
        }
      }
    })
  },
}

export const mkdirCommand: Command = {
  path: ['mkdir'],
  summary: 'Create directories in a volume.',
  positionals: [{ name: 'VOLUME:PATH', description: 'one or more directories', variadic: true }],
  options: {
    parents: { type: 'boolean', short: 'p', description: 'create missing parents; an existing directory is not an error' },
    mode: { type: 'string', short: 'm', value: 'OCTAL', description: 'permission bits (default 755)' },
  },
  async run(ctx) {
    if (ctx.positionals.length === 0) throw new UsageError('missing VOLUME:PATH')
    const refs = ctx.positionals.map((a) => parseVolumeRef(a))
    const mode = ctx.values.mode === undefined ? undefined : parseMode(ctx.values.mode as string)
    await withFiles(ctx, sameVolume(refs), true, async (files) => {
      for (const ref of refs) await files.mkdir(ref.path, { parents: ctx.values.parents === true, mode })
    })
  },
}

function parseMode(text: string): number {
  if (!/^[0-7]{1,4}$/.test(text)) throw new UsageError(`--mode must be octal permission bits such as 755, got ${JSON.stringify(text)}`)
  return parseInt(text, 8)
}

export const mvCommand: Command = {
  path: ['mv'],
  summary: 'Move or rename within one volume (into DEST if it is a directory).',
  positionals: [
    { name: 'VOLUME:SRC', description: 'what to move' },
    { name: 'VOLUME:DEST', description: 'the new path, or an existing directory to move into' },
  ],
  async run(ctx) {
    const [from, to] = ctx.positionals.map((a) => parseVolumeRef(a))
    if (from.name !== to.name) throw new CliError(`cannot move between volumes (${from.name} → ${to.name}): copy with get and put instead`, EXIT.error)
    await withFiles(ctx, from.name, true, async (files) => {
      let dest = to.path
      const target = await files.stat(dest).catch(() => undefined)
      if (target?.type === 'dir') dest = path.posix.join(target.path, path.posix.basename((await files.stat(from.path)).path))
      await files.move(from.path, dest)
    })
  },
}

// --- put and get ------------------------------------------------------------------

interface LocalItem {
  /** Path relative to the copied root ('' for the root itself). */
  rel: string
  stat: Stats
}

async function walkLocal(root: string): Promise<LocalItem[]> {
  const out: LocalItem[] = []
  const visit = async (rel: string) => {
    const stat = await fsp.lstat(path.join(root, rel))
    out.push({ rel, stat })
    if (stat.isDirectory()) for (const name of (await fsp.readdir(path.join(root, rel))).sort()) await visit(rel ? `${rel}/${name}` : name)
  }
  await visit('')
  return out
}

export const putCommand: Command = {
  path: ['put'],
  summary: 'Copy a local file or directory (or standard input, "-") into a volume.',
  description: 'Like cp -r: into DEST if it is an existing directory, else as DEST. Modes and modification times are kept. A new file appears only once it is complete (an interrupted put leaves none); an existing file is rewritten in place, keeping its inode and links. Progress on a terminal.',
  positionals: [
    { name: 'LOCAL', description: 'a file, a directory (copied recursively), or - for standard input' },
    { name: 'VOLUME:PATH', description: 'where it goes' },
  ],
  examples: ['s0fs put ./project agent-42:/work', 'tar c . | s0fs put - agent-42:/backup.tar'],
  async run(ctx) {
    const [local, destArg] = ctx.positionals
    if (isVolumeRef(local) && !destArg.includes(':')) throw new UsageError('put copies LOCAL to VOLUME:PATH; to copy out of a volume use s0fs get')
    const dest = parseVolumeRef(destArg, 'destination')
    await withFiles(ctx, dest.name, true, async (files) => {
      if (local === '-') {
        await files.write(dest.path, process.stdin)
        return
      }
      const items = await walkLocal(local).catch((err) => {
        throw new CliError(`cannot read ${local}: ${(err as Error).message}`, (err as NodeJS.ErrnoException).code === 'ENOENT' ? EXIT.notFound : EXIT.error)
      })
      const existing = await files.stat(dest.path).catch(() => undefined)
      const base = existing?.type === 'dir' || dest.path.endsWith('/') ? path.posix.join(existing?.path ?? dest.path, path.basename(path.resolve(local))) : dest.path
      const total = { files: items.filter((i) => !i.stat.isDirectory()).length, bytes: items.reduce((n, i) => n + (i.stat.isFile() ? i.stat.size : 0), 0) }
      const progress = new TransferProgress(process.stderr, 'put', total)
      const dirs: { target: string; stat: Stats }[] = []
      try {
        for (const item of items) {
          const target = item.rel ? `${base}/${item.rel}` : base
          const source = path.join(local, item.rel)
          if (item.stat.isDirectory()) {
            await files.mkdir(target, { parents: true, mode: item.stat.mode & 0o7777 })
            dirs.push({ target, stat: item.stat })
          }
          else if (item.stat.isSymbolicLink()) {
            await files.remove(target).catch(() => undefined)
            await files.symlink(target, await fsp.readlink(source))
            progress.add(0, 1)
          } else if (item.stat.isFile()) {
            const stream = createReadStream(source, { highWaterMark: 1024 * 1024 })
            try {
              await files.write(target, progress.count(stream), { mode: item.stat.mode & 0o7777, mtime: item.stat.mtime })
            } finally {
              stream.destroy()
            }
            progress.add(0, 1)
          } else ctx.io.err(`skipped ${source}: not a file, directory or symlink\n`)
        }
        // Directory modes and times last, deepest first: filling a directory changes its mtime.
        for (const d of dirs.reverse()) await files.setAttributes(d.target, { mode: d.stat.mode & 0o7777, mtime: d.stat.mtime })
      } finally {
        progress.done()
      }
    })
  },
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
    await withFiles(ctx, src.name, false, async (files) => {
      const top = await files.stat(src.path)
      const followed = top.type === 'symlink' ? await files.stat(src.path, { follow: true }) : top
      const isDir = followed.type === 'dir'
      if (local === '-') {
        if (isDir) throw new UsageError(`${src.path} is a directory; standard output takes one file (copy the directory to a local path)`)
        for await (const chunk of files.read(src.path)) await writeOut(chunk)
        return
      }
      const localIsDir = (await fsp.stat(local).catch(() => undefined))?.isDirectory() ?? false
      const base = localIsDir ? path.join(local, top.path === '/' ? src.name : top.name) : local
      if (!isDir) {
        await getFile(files, src.path, base, top, new TransferProgress(process.stderr, 'get', { files: 1, bytes: top.size }))
        return
      }
      // Directories: list the tree first, so progress has a total.
      const tree: FileStat[] = []
      const visit = async (p: string) => {
        for (const e of await files.list(p)) {
          tree.push(e)
          if (e.type === 'dir') await visit(e.path)
        }
      }
      await visit(src.path)
      const root = followed.path
      const progress = new TransferProgress(process.stderr, 'get', { files: tree.filter((e) => e.type !== 'dir').length, bytes: tree.reduce((n, e) => n + (e.type === 'file' ? e.size : 0), 0) })
      try {
        await fsp.mkdir(base, { recursive: true })
        const dirs: { dest: string; stat: FileStat }[] = []
        for (const e of tree) {
          const dest = path.join(base, path.posix.relative(root, e.path))
          if (e.type === 'dir') {
            await fsp.mkdir(dest, { recursive: true })
            dirs.push({ dest, stat: e })
          } else if (e.type === 'symlink') {
            await fsp.rm(dest, { force: true })
            await fsp.symlink(e.target!, dest)
            progress.add(0, 1)
          } else if (e.type === 'file') await getFile(files, e.path, dest, e, progress)
          else ctx.io.err(`skipped ${e.path}: not a file, directory or symlink\n`)
        }
        // Directory times and modes last: filling a directory changes its mtime, and a read-only mode would stop the filling.
        for (const d of dirs.reverse()) await applyMeta(d.dest, d.stat)
      } finally {
        progress.done()
      }
    })
  },
}

async function getFile(files: FileTree, from: string, to: string, stat: FileStat, progress: TransferProgress): Promise<void> {
  await pipeline(progress.count(files.read(from)), createWriteStream(to))
  progress.add(0, 1)
  await applyMeta(to, stat)
}

async function applyMeta(to: string, stat: FileStat): Promise<void> {
  await fsp.chmod(to, stat.mode & 0o7777)
  const mtime = new Date(stat.mtime)
  await fsp.utimes(to, mtime, mtime)
}

export const FILE_COMMANDS: Command[] = [lsCommand, statCommand, catCommand, putCommand, getCommand, mkdirCommand, mvCommand, rmCommand]
