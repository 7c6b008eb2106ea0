import { createHash } from 'node:crypto'
import { promises as fsp, readFileSync, realpathSync } from 'node:fs'
import path from 'node:path'

/**
 * Where running mount daemons leave their address: one JSON record and one
 * control socket per mountpoint, under the user's runtime directory.
 */

export interface MountRecord {
  pid: number
  mountpoint: string
  repo: string
  /** The repository's id: how a CLI finds the daemon that holds a volume of its repository. */
  repoId?: string
  volume: string
  snapshot?: string
  readOnly: boolean
  /** The kernel buffers writes (mount --writeback-cache): flush it (flushKernelCache) before asking for a commit. */
  writebackCache?: boolean
  socket: string
  log?: string
  started: string
}

export function registryDir(runDir: string): string {
  return path.join(runDir, 'mounts')
}

export function canonicalMountpoint(mountpoint: string): string {
  try {
    return realpathSync(mountpoint)
  } catch {
    return path.resolve(mountpoint)
  }
}

/**
 * Files of the mount at `canonical` (a path from canonicalMountpoint). Takes
 * it ready-made: once the daemon has mounted, resolving the path would stat
 * its own mount from its own event loop — a deadlock.
 */
export function recordPaths(runDir: string, canonical: string): { record: string; socket: string; log: string } {
  const id = createHash('sha256').update(canonical).digest('hex').slice(0, 16)
  const base = path.join(registryDir(runDir), id)
  return { record: `${base}.json`, socket: `${base}.sock`, log: `${base}.log` }
}

export async function writeRecord(runDir: string, record: MountRecord): Promise<void> {
  await fsp.mkdir(registryDir(runDir), { recursive: true, mode: 0o700 })
  const { record: file } = recordPaths(runDir, record.mountpoint)
  await fsp.writeFile(`${file}.tmp`, JSON.stringify(record, null, 2), { mode: 0o600 })
  await fsp.rename(`${file}.tmp`, file)
}

export async function readRecord(runDir: string, canonical: string): Promise<MountRecord | undefined> {
  try {
    return JSON.parse(await fsp.readFile(recordPaths(runDir, canonical).record, 'utf8'))
  } catch {
    return undefined
  }
}

export async function listRecords(runDir: string): Promise<MountRecord[]> {
  const dir = registryDir(runDir)
  const out: MountRecord[] = []
  for (const name of await fsp.readdir(dir).catch(() => [] as string[])) {
    if (!name.endsWith('.json')) continue
    try {
      out.push(JSON.parse(await fsp.readFile(path.join(dir, name), 'utf8')))
    } catch {
      // being written, or removed
    }
  }
  return out
}

export async function removeRecord(runDir: string, canonical: string): Promise<void> {
  const paths = recordPaths(runDir, canonical)
  await fsp.rm(paths.record, { force: true })
  await fsp.rm(paths.socket, { force: true })
}

/** The mounts of this mount namespace at `canonical`, from /proc/self/mountinfo (`device` is "major:minor"), oldest first. */
export function mountsAt(canonical: string): { fstype: string; source: string; device: string }[] {
  const target = canonical
  const out: { fstype: string; source: string; device: string }[] = []
  let text = ''
  try {
    text = readFileSync('/proc/self/mountinfo', 'utf8')
  } catch {
    return out
  }
  for (const line of text.split('\n')) {
    const [left, right] = line.split(' - ')
    if (!right) continue
    const fields = left.split(' ')
    const point = fields[4]?.replace(/\\040/g, ' ')
    if (point !== target) continue
    const [fstype, source] = right.split(' ')
    out.push({ fstype, source, device: fields[2] })
  }
  return out
}

/** The device ("major:minor") of the newest s0fs mount at `canonical`: its settings live in /sys/class/bdi/DEVICE. */
export function s0fsDevice(canonical: string): string | undefined {
  return mountsAt(canonical)
    .filter((m) => m.fstype === 'fuse.s0fs')
    .pop()?.device
}

/**
 * mounted: an s0fs mount answers; dead: its daemon is gone ("Transport
 * endpoint is not connected"). Never call this from the daemon serving it.
 */
export async function mountState(canonical: string): Promise<'none' | 'mounted' | 'dead' | 'other'> {
  const mounts = mountsAt(canonical)
  if (mounts.length === 0) return 'none'
  if (!mounts.some((m) => m.fstype === 'fuse.s0fs')) return 'other'
  try {
    // statfs is never answered from the kernel's caches, so it reaches the daemon (or fails).
    await fsp.statfs(canonical)
    return 'mounted'
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    return code === 'ENOTCONN' || code === 'ECONNABORTED' ? 'dead' : 'mounted'
  }
}
