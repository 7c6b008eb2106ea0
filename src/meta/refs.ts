import { randomBytes } from 'node:crypto'
import { Packr } from 'msgpackr'
import type { RepoKeys } from '../crypto/index.js'
import { listAll, NotFoundError, PreconditionFailedError, type ObjectStore } from '../store/index.js'
import type { PageRef } from './node.js'

/**
 * Volume heads and snapshots. Each is one small sealed object whose key is a
 * keyed hash of its name (`refs/v/…`, `refs/s/…`), so the bucket shows neither
 * names nor how many snapshots belong to which volume. The name itself is
 * inside, encrypted. A volume head changes only by compare-and-swap and carries
 * a generation that grows by one per commit; a snapshot never changes.
 */

const packr = new Packr({ useRecords: false })

export interface Provenance {
  kind: 'volume' | 'snapshot'
  name: string
  generation: number
}

export interface VolumeHead {
  kind: 'volume'
  name: string
  /** Stable identity of the volume (survives renames of nothing, distinguishes a re-created name). */
  volumeId: string
  generation: number
  root: PageRef | null
  created: string
  updated: string
  /** The writer session that published this head, and how far its local log was applied. */
  writer?: { session: string; leaseEpoch: number; walSeq: number }
  /** Where the volume's first root came from (fork or restore). */
  origin?: Provenance
  /** The root this head replaced at a restore, kept so GC can honour its grace period. */
  previousRoot?: PageRef | null
  files?: number
  bytes?: number
}

export interface Snapshot {
  kind: 'snapshot'
  name: string
  volume: string
  volumeId: string
  generation: number
  root: PageRef | null
  created: string
  files?: number
  bytes?: number
}

export class RefNotFoundError extends Error {
  constructor(kind: string, name: string, hint?: string) {
    super(`no ${kind} named ${JSON.stringify(name)}${hint ? ` (${hint})` : ''}`)
    this.name = 'RefNotFoundError'
  }
}

export class RefExistsError extends Error {
  constructor(kind: string, name: string) {
    super(`a ${kind} named ${JSON.stringify(name)} already exists`)
    this.name = 'RefExistsError'
  }
}

/** The head changed since we read it: another writer, a restore, or a lost lease. */
export class HeadConflictError extends Error {
  constructor(name: string) {
    super(`volume ${JSON.stringify(name)} was changed by someone else since this writer last read it; refusing to overwrite newer state`)
    this.name = 'HeadConflictError'
  }
}

export class InvalidNameError extends Error {
  constructor(kind: string, name: string) {
    super(`invalid ${kind} name ${JSON.stringify(name)}: use 1-128 characters of A-Z a-z 0-9 . _ -, not starting with . or -`)
    this.name = 'InvalidNameError'
  }
}

export function validateName(kind: string, name: string): void {
  if (!/^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/.test(name)) throw new InvalidNameError(kind, name)
}

export function newVolumeId(): string {
  return randomBytes(12).toString('hex')
}

function encodeRefValue(value: VolumeHead | Snapshot): Buffer {
  const root = value.root ? [Buffer.from(value.root.pack, 'hex'), value.root.off, value.root.len, value.root.id] : null
  const previousRoot =
    'previousRoot' in value && value.previousRoot
      ? [Buffer.from(value.previousRoot.pack, 'hex'), value.previousRoot.off, value.previousRoot.len, value.previousRoot.id]
      : undefined
  return packr.pack({ ...value, root, previousRoot })
}

function decodeRoot(raw: unknown): PageRef | null {
  if (!raw) return null
  const [pack, off, len, id] = raw as [Uint8Array, number, number, Uint8Array]
  return { pack: Buffer.from(pack).toString('hex'), off, len, id: Buffer.from(id) }
}

function decodeRefValue<T extends VolumeHead | Snapshot>(data: Buffer): T {
  const raw = packr.unpack(data) as T & { root: unknown; previousRoot?: unknown }
  const value = { ...raw, root: decodeRoot(raw.root) } as T
  if ('previousRoot' in raw && raw.previousRoot !== undefined) (value as VolumeHead).previousRoot = decodeRoot(raw.previousRoot)
  return value
}

export class RefStore {
  constructor(
    private readonly store: ObjectStore,
    private readonly keys: RepoKeys,
  ) {}

  volumeKey(name: string): string {
    return `refs/v/${this.keys.nameKey('volume', name)}`
  }

  snapshotKey(name: string): string {
    return `refs/s/${this.keys.nameKey('snapshot', name)}`
  }

  async getVolume(name: string): Promise<{ head: VolumeHead; etag: string } | undefined> {
    return this.read<VolumeHead>(this.volumeKey(name))
  }

  async requireVolume(name: string): Promise<{ head: VolumeHead; etag: string }> {
    const found = await this.getVolume(name)
    if (!found) throw new RefNotFoundError('volume', name)
    return found
  }

  async getSnapshot(name: string): Promise<Snapshot | undefined> {
    return (await this.read<Snapshot>(this.snapshotKey(name)))?.head
  }

  async requireSnapshot(name: string): Promise<Snapshot> {
    const found = await this.getSnapshot(name)
    if (!found) throw new RefNotFoundError('snapshot', name)
    return found
  }

  async listVolumes(): Promise<VolumeHead[]> {
    return this.list<VolumeHead>('refs/v/')
  }

  async listSnapshots(): Promise<Snapshot[]> {
    return this.list<Snapshot>('refs/s/')
  }

  /** Creates a volume head; fails if the name is taken by a volume or a snapshot. */
  async createVolume(head: VolumeHead): Promise<string> {
    validateName('volume', head.name)
    if (await this.store.head(this.snapshotKey(head.name))) throw new RefExistsError('snapshot', head.name)
    const key = this.volumeKey(head.name)
    let etag: string
    try {
      etag = (await this.store.putIfAbsent(key, this.seal(key, head))).etag
    } catch (err) {
      if (err instanceof PreconditionFailedError) throw new RefExistsError('volume', head.name)
      throw err
    }
    await this.undoIfBoth(key, this.snapshotKey(head.name), 'snapshot', head.name)
    return etag
  }

  /**
   * Volumes and snapshots share one namespace, kept in two keys: the check
   * before a create and the create are two requests, so a snapshot and a
   * volume of one name created at once could both land. Each creator looks
   * again after writing and takes its own key back if the other kind is
   * there: at worst both fail (and a retry succeeds), never both stay.
   */
  private async undoIfBoth(own: string, other: string, otherKind: string, name: string): Promise<void> {
    if (!(await this.store.head(other))) return
    await this.store.deleteMany([own])
    throw new RefExistsError(otherKind, name)
  }

  /** Replaces a head only if it is still the version we read (`etag`). */
  async updateVolume(head: VolumeHead, etag: string): Promise<string> {
    const key = this.volumeKey(head.name)
    try {
      return (await this.store.putIfMatch(key, this.seal(key, head), etag)).etag
    } catch (err) {
      if (err instanceof PreconditionFailedError) throw new HeadConflictError(head.name)
      throw err
    }
  }

  async deleteVolume(name: string): Promise<void> {
    await this.store.deleteMany([this.volumeKey(name)])
  }

  async createSnapshot(snapshot: Snapshot): Promise<void> {
    validateName('snapshot', snapshot.name)
    if (await this.store.head(this.volumeKey(snapshot.name))) throw new RefExistsError('volume', snapshot.name)
    const key = this.snapshotKey(snapshot.name)
    try {
      await this.store.putIfAbsent(key, this.seal(key, snapshot))
    } catch (err) {
      if (err instanceof PreconditionFailedError) throw new RefExistsError('snapshot', snapshot.name)
      throw err
    }
    await this.undoIfBoth(key, this.volumeKey(snapshot.name), 'volume', snapshot.name)
  }

  async deleteSnapshot(name: string): Promise<void> {
    if (!(await this.store.head(this.snapshotKey(name)))) throw new RefNotFoundError('snapshot', name)
    await this.store.deleteMany([this.snapshotKey(name)])
  }

  private seal(key: string, value: VolumeHead | Snapshot): Buffer {
    return this.keys.seal('meta', encodeRefValue(value), `ref:${key}`)
  }

  private async read<T extends VolumeHead | Snapshot>(key: string): Promise<{ head: T; etag: string } | undefined> {
    try {
      const { data, etag } = await this.store.getVersioned(key)
      return { head: decodeRefValue<T>(this.keys.open('meta', data, `ref:${key}`, `ref ${key}`)), etag }
    } catch (err) {
      if (err instanceof NotFoundError) return undefined
      throw err
    }
  }

  private async list<T extends VolumeHead | Snapshot>(prefix: string): Promise<T[]> {
    const out: T[] = []
    for await (const obj of listAll(this.store, prefix)) {
      const found = await this.read<T>(obj.key)
      if (found) out.push(found.head)
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
  }
}
