import path from 'node:path'
import { FsError, type Cred } from '../fs/index.js'
import { RefNotFoundError } from '../meta/index.js'
import { controlRequest } from '../mount/control.js'
import { flushKernelCache } from '../mount/kernel-flush.js'
import { listRecords, type MountRecord } from '../mount/registry.js'
import { RemoteFiles } from '../mount/remote-files.js'
import type { FileTree, Repository, VolumeSession } from '../repo/index.js'
import { processAlive } from '../util/process.js'
import { defaultPaths } from './credentials.js'
import { UsageError } from './exit-codes.js'

/**
 * How CLI commands reach a volume: through the mount daemon that holds its
 * lease on this node (so a mounted, busy volume is never fought over), or
 * directly, taking the lease for the command's duration.
 */

/** "VOLUME:PATH" as written on the command line. */
export interface VolumeRef {
  name: string
  path: string
}

export function parseVolumeRef(arg: string, what = 'argument'): VolumeRef {
  const colon = arg.indexOf(':')
  if (colon <= 0) throw new UsageError(`${what} ${JSON.stringify(arg)} is not VOLUME:PATH (e.g. default:/src/main.c, or snap-1:/ for a snapshot)`)
  return { name: arg.slice(0, colon), path: arg.slice(colon + 1) || '/' }
}

export function isVolumeRef(arg: string): boolean {
  return /^[^/:]+:/.test(arg)
}

/** The caller's identity inside the volume: permissions apply as on a local disk, and new files are theirs. */
export function callerCred(): Cred {
  return { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, groups: process.getgroups?.() ?? [] }
}

/** The live mount daemon on this node holding `volume` of `repo` for writing, if any. */
export async function findWriterMount(repo: Repository, volume: string): Promise<MountRecord | undefined> {
  const records = await listRecords(defaultPaths().runDir)
  return records.find(
    (r) => r.volume === volume && !r.snapshot && !r.readOnly && (r.repoId ? r.repoId === repo.id : r.repo === repo.store.displayUrl) && processAlive(r.pid),
  )
}

/**
 * Makes a mounted volume's latest writes part of its head before a snapshot,
 * fork or diff reads it: asks the local daemon to commit. Without a local
 * daemon the head is already everything committed; a writer elsewhere is
 * reported, since its last few seconds are not in the head yet.
 */
export async function commitIfMounted(warn: (message: string) => void, repo: Repository, volume: string): Promise<void> {
  const mount = await findWriterMount(repo, volume)
  if (mount) {
    await flushKernelCache(mount)
    await controlRequest(mount.socket, { op: 'commit' })
    return
  }
  const info = await repo.volumeInfo(volume).catch(() => undefined)
  if (info?.writer) {
    warn(`note: volume ${volume} is being written (${info.writer.holder.purpose} on ${info.writer.holder.host}); this uses its last commit (generation ${info.generation}, ${info.updated})`)
  }
}

export interface OpenedFiles {
  files: FileTree
  /** The control socket of the mount daemon the files are reached through, if any. */
  mountSocket?: string
  /** Where that daemon's mount shows the volume on this node. */
  mountpoint?: string
  /** Commits (direct writer) and releases everything. */
  close(): Promise<void>
}

/**
 * Opens a volume or snapshot for path-level access. Writing needs a volume:
 * through its local mount daemon if it has one, else with the volume's lease
 * (refused, exit 7, while another writer holds it).
 */
export async function openFiles(repo: Repository, name: string, options: { write: boolean; purpose: string }): Promise<OpenedFiles> {
  const volume = await repo.refs.getVolume(name)
  if (volume) {
    const mount = await findWriterMount(repo, name)
    if (mount) {
      const remote = new RemoteFiles(mount.socket)
      return { files: remote, mountSocket: mount.socket, mountpoint: mount.mountpoint, close: async () => remote.close() }
    }
  } else {
    if (!(await repo.refs.getSnapshot(name))) throw new RefNotFoundError('volume or snapshot', name)
    if (options.write) throw new FsError('EROFS', `${name} is a snapshot, and snapshots are read-only (fork it to get a writable volume: s0fs fork ${name} NEW)`)
  }
  let session: VolumeSession
  if (!volume) session = await repo.openVolume(name, { portalDir: portalDir(), snapshot: name })
  else if (!options.write) session = await repo.openVolume(name, { portalDir: portalDir(), readOnly: true })
  else session = await repo.openVolume(name, { portalDir: portalDir(), purpose: options.purpose, leaseTtlMs: 30_000 })
  return { files: session.files({ cred: callerCred() }), close: () => session.close() }
}

function portalDir(): string {
  return path.join(defaultPaths().cacheDir, 'portal')
}
