import path from 'node:path'
import { FsError } from '../../fs/index.js'
import type { FileStat } from '../../repo/index.js'
import type { Command } from '../command.js'
import { CliError, EXIT, errorMessage, UsageError } from '../exit-codes.js'
import { writeOut } from '../stdout.js'
import { parseVolumeRef, type VolumeRef } from '../volume-access.js'
import { getCommand, putCommand } from './transfer.js'
import { withFiles } from './with-files.js'

/**
 * File access without a mount: ls, stat, cat, rm, mv, mkdir, put, get on
 * VOLUME:PATH (a snapshot name reads the snapshot). Writes go through the
 * volume's mount daemon when it is mounted on this node, else take the
 * volume's lease for the duration of the command and commit at the end.
 */

const json = { json: { type: 'boolean' as const, description: 'print machine-readable JSON' } }

function sameVolume(refs: VolumeRef[]): string {
  const names = new Set(refs.map((r) => r.name))
  if (names.size > 1) throw new UsageError(`all paths must be in one volume (got ${[...names].join(', ')})`)
  return refs[0].name
}

/** ls -l's mode column: setuid, setgid and sticky show in the execute places (s/S, s/S, t/T). */
function modeString(s: FileStat): string {
  let out = { file: '-', dir: 'd', symlink: 'l', other: '?' }[s.type]
  const special = [0o4000, 0o2000, 0o1000]
  for (const [i, shift] of [6, 3, 0].entries()) {
    const bits = (s.mode >> shift) & 7
    const x = bits & 1
    const exec = s.mode & special[i] ? (i === 2 ? (x ? 't' : 'T') : x ? 's' : 'S') : x ? 'x' : '-'
    out += (bits & 4 ? 'r' : '-') + (bits & 2 ? 'w' : '-') + exec
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
  summary: 'Show a path\'s type, mode, owner, size, links, inode and mtime (a symlink itself, not its target).',
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

export const catCommand: Command = {
  path: ['cat'],
  summary: 'Write files of a volume or snapshot to standard output.',
  positionals: [{ name: 'VOLUME:PATH', description: 'one or more files', variadic: true }],
  async run(ctx) {
    const refs = ctx.positionals.map((a) => parseVolumeRef(a))
    await withFiles(ctx, sameVolume(refs), false, async (files) => {
      for (const ref of refs) for await (const chunk of files.read(ref.path)) if (!(await writeOut(chunk))) return
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
    const refs = ctx.positionals.map((a) => parseVolumeRef(a))
    await withFiles(ctx, sameVolume(refs), true, async (files) => {
      // Like rm: every path is tried; each failure is reported, and the last one sets the exit status.
      let failure: unknown
      for (const ref of refs) {
        try {
          const stat = await files.stat(ref.path)
          // (The root is left for remove() to refuse, whatever the flags.)
          if (!ctx.values.recursive && stat.type === 'dir' && stat.path !== '/') throw new FsError('EISDIR', `${ref.path} is a directory (use -r)`)
          await files.remove(ref.path, { recursive: ctx.values.recursive === true })
        } catch (err) {
          if (ctx.values.force && err instanceof FsError && err.code === 'ENOENT') continue
          if (failure) ctx.io.err(`s0fs rm: ${errorMessage(failure)}\n`)
          failure = err
        }
      }
      if (failure) throw failure
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
      const target = await files.stat(dest, { follow: true }).catch(() => undefined)
      if (target?.type === 'dir') dest = path.posix.join(target.path, path.posix.basename((await files.stat(from.path)).path))
      await files.move(from.path, dest)
    })
  },
}

export const FILE_COMMANDS: Command[] = [lsCommand, statCommand, catCommand, putCommand, getCommand, mkdirCommand, mvCommand, rmCommand]
