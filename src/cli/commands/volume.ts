import type { SnapshotInfo, VolumeDiff, VolumeInfo } from '../../repo/index.js'
import type { Command, CommandContext } from '../command.js'
import { controlRequest } from '../../mount/control.js'
import { flushKernelCache } from '../../mount/kernel-flush.js'
import { table } from '../format.js'
import { commitIfMounted, findWriterMount } from '../volume-access.js'
import { openRepo } from './repo.js'

/**
 * Volume management: create/list/info/delete, snapshots, fork, restore and
 * diff. Every one is O(1) in the volume's size (a head pointer is written);
 * on a volume mounted here, the mount daemon commits first, so a snapshot or
 * fork holds everything written until the command ran.
 */

const json = { json: { type: 'boolean' as const, description: 'print machine-readable JSON' } }

async function withRepo<T>(ctx: CommandContext, fn: (repo: Awaited<ReturnType<typeof openRepo>>) => Promise<T>): Promise<T> {
  const repo = await openRepo(ctx)
  try {
    return await fn(repo)
  } finally {
    await repo.close()
  }
}

function print(ctx: CommandContext, value: unknown, text: () => string): void {
  if (ctx.values.json) ctx.io.out(JSON.stringify(value, null, 2) + '\n')
  else ctx.io.out(text())
}

function warnTo(ctx: CommandContext): (message: string) => void {
  return (message) => ctx.io.err(message + '\n')
}

function origin(v: VolumeInfo): string {
  return v.origin ? `${v.origin.kind} ${v.origin.name}@${v.origin.generation}` : '-'
}

function writer(v: VolumeInfo): string {
  return v.writer ? `${v.writer.holder.purpose} (${v.writer.holder.host}, pid ${v.writer.holder.pid})` : '-'
}

export const volumeCreateCommand: Command = {
  path: ['volume', 'create'],
  summary: 'Create an empty volume.',
  description: 'The root directory belongs to the calling user. Prints nothing unless --json.',
  positionals: [{ name: 'NAME', description: 'letters, digits, ".", "_" and "-", up to 128 (shared namespace with snapshots)' }],
  options: json,
  examples: ['s0fs volume create agent-42'],
  async run(ctx) {
    const info = await withRepo(ctx, (repo) => repo.createVolume(ctx.positionals[0], { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 }))
    if (ctx.values.json) ctx.io.out(JSON.stringify(info, null, 2) + '\n')
  },
}

export const volumeListCommand: Command = {
  path: ['volume', 'list'],
  summary: 'List volumes: generation, last commit, origin, current writer.',
  options: json,
  async run(ctx) {
    const volumes = await withRepo(ctx, (repo) => repo.listVolumes())
    print(ctx, volumes, () =>
      volumes.length === 0 ? '' : table(['NAME', 'GENERATION', 'UPDATED', 'ORIGIN', 'WRITER'], volumes.map((v) => [v.name, v.generation, v.updated, origin(v), writer(v)])),
    )
  },
}

export const volumeInfoCommand: Command = {
  path: ['volume', 'info'],
  summary: "Show a volume's identity, generation, origin, writer and snapshots.",
  positionals: [{ name: 'NAME', description: 'the volume' }],
  options: json,
  async run(ctx) {
    const { info, snapshots } = await withRepo(ctx, async (repo) => ({
      info: await repo.volumeInfo(ctx.positionals[0]),
      snapshots: await repo.listSnapshots(ctx.positionals[0]),
    }))
    print(ctx, { ...info, snapshots }, () =>
      [
        `volume      ${info.name}`,
        `id          ${info.volumeId}`,
        `generation  ${info.generation}`,
        `created     ${info.created}`,
        `updated     ${info.updated}`,
        `origin      ${origin(info)}`,
        `writer      ${writer(info)}${info.writer ? `, lease until ${new Date(info.writer.expires).toISOString()}` : ''}`,
        `snapshots   ${snapshots.length ? snapshots.map((s) => s.name).join(', ') : '-'}`,
        '',
      ].join('\n'),
    )
  },
}

export const volumeDeleteCommand: Command = {
  path: ['volume', 'delete'],
  summary: 'Delete a volume (refused while it is mounted for writing).',
  description: 'Snapshots of the volume and forks made from it keep working: they own their data. `s0fs gc` frees what nothing references any more.',
  positionals: [{ name: 'NAME', description: 'the volume' }],
  async run(ctx) {
    await withRepo(ctx, (repo) => repo.deleteVolume(ctx.positionals[0]))
  },
}

export const snapshotCreateCommand: Command = {
  path: ['snapshot', 'create'],
  summary: 'Record a volume as an immutable snapshot (O(1); a mounted volume commits first).',
  positionals: [
    { name: 'VOLUME', description: 'the volume' },
    { name: 'NAME', description: 'the snapshot (shares the namespace of volumes)' },
  ],
  options: json,
  examples: ['s0fs snapshot create agent-42 before-upgrade'],
  async run(ctx) {
    const [volume, name] = ctx.positionals
    const started = performance.now()
    const info: SnapshotInfo = await withRepo(ctx, async (repo) => {
      const mount = await findWriterMount(repo, volume)
      if (!mount) {
        await commitIfMounted(warnTo(ctx), repo, volume)
        return repo.createSnapshot(volume, name)
      }
      // The daemon commits and records the snapshot in one step, so no write slips in between.
      await flushKernelCache(mount)
      await controlRequest(mount.socket, { op: 'snapshot', name })
      return (await repo.listSnapshots(volume)).find((s) => s.name === name)!
    })
    if (ctx.values.json) ctx.io.out(JSON.stringify({ ...info, ms: Math.round((performance.now() - started) * 10) / 10 }, null, 2) + '\n')
  },
}

export const snapshotListCommand: Command = {
  path: ['snapshot', 'list'],
  summary: 'List snapshots, of one volume or all.',
  positionals: [{ name: 'VOLUME', description: 'only this volume\'s snapshots', optional: true }],
  options: json,
  async run(ctx) {
    const snapshots = await withRepo(ctx, (repo) => repo.listSnapshots(ctx.positionals[0]))
    print(ctx, snapshots, () => (snapshots.length === 0 ? '' : table(['NAME', 'VOLUME', 'GENERATION', 'CREATED'], snapshots.map((s) => [s.name, s.volume, s.generation, s.created]))))
  },
}

export const snapshotDeleteCommand: Command = {
  path: ['snapshot', 'delete'],
  summary: 'Delete a snapshot (forks made from it keep working).',
  positionals: [{ name: 'NAME', description: 'the snapshot' }],
  async run(ctx) {
    await withRepo(ctx, (repo) => repo.deleteSnapshot(ctx.positionals[0]))
  },
}

export const forkCommand: Command = {
  path: ['fork'],
  summary: 'Create a volume from a volume or snapshot: O(1), copy-on-write, sharing all data.',
  positionals: [
    { name: 'SOURCE', description: 'a volume (a mounted one commits first) or a snapshot' },
    { name: 'NEWVOLUME', description: 'the new volume' },
  ],
  options: json,
  examples: ['s0fs fork agent-42 agent-42-try2', 's0fs fork before-upgrade agent-42-old'],
  async run(ctx) {
    const [source, name] = ctx.positionals
    const info = await withRepo(ctx, async (repo) => {
      if (await repo.refs.getVolume(source)) await commitIfMounted(warnTo(ctx), repo, source)
      return repo.fork(source, name)
    })
    if (ctx.values.json) ctx.io.out(JSON.stringify(info, null, 2) + '\n')
  },
}

export const restoreCommand: Command = {
  path: ['restore'],
  summary: "Point a volume back at a snapshot's exact tree (refused while it is mounted for writing).",
  description: 'The replaced state is not lost until GC: snapshot it first if you may want it back.',
  positionals: [
    { name: 'VOLUME', description: 'the volume to restore' },
    { name: 'SNAPSHOT', description: 'the snapshot to restore it to' },
  ],
  options: json,
  async run(ctx) {
    const [volume, snapshot] = ctx.positionals
    const info = await withRepo(ctx, (repo) => repo.restore(volume, snapshot))
    if (ctx.values.json) ctx.io.out(JSON.stringify(info, null, 2) + '\n')
  },
}

export const diffCommand: Command = {
  path: ['diff'],
  summary: 'Paths added, removed and modified between two volumes or snapshots.',
  description: 'One line per path: A (added), D (deleted), M (modified). A rename shows as D and A. Mounted volumes commit first.',
  positionals: [
    { name: 'A', description: 'the older volume or snapshot' },
    { name: 'B', description: 'the newer volume or snapshot' },
  ],
  options: json,
  examples: ['s0fs diff before-upgrade agent-42', 's0fs diff --json snap-1 snap-2'],
  async run(ctx) {
    const [a, b] = ctx.positionals
    const diff: VolumeDiff = await withRepo(ctx, async (repo) => {
      for (const name of new Set([a, b])) if (await repo.refs.getVolume(name)) await commitIfMounted(warnTo(ctx), repo, name)
      return repo.diff(a, b)
    })
    print(ctx, diff, () => {
      const lines = [
        ...diff.added.map((e) => ({ mark: 'A', ...e })),
        ...diff.removed.map((e) => ({ mark: 'D', ...e })),
        ...diff.modified.map((e) => ({ mark: 'M', ...e })),
      ].sort((x, y) => (x.path < y.path ? -1 : x.path > y.path ? 1 : x.mark < y.mark ? -1 : 1))
      return lines.map((l) => `${l.mark}\t${l.path}${l.type === 'dir' ? '/' : ''}\n`).join('')
    })
  },
}

export const VOLUME_COMMANDS: Command[] = [
  volumeCreateCommand,
  volumeListCommand,
  volumeInfoCommand,
  volumeDeleteCommand,
  snapshotCreateCommand,
  snapshotListCommand,
  snapshotDeleteCommand,
  forkCommand,
  restoreCommand,
  diffCommand,
]
