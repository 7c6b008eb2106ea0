import { randomBytes } from 'node:crypto'
import {
  ConfigError,
  RepoKeys,
  addSlot,
  encodeConfig,
  FORMAT_VERSION,
  newConfig,
  parseConfig,
  unlock,
  verifyConfig,
  type Credential,
  type KeySlot,
  type RepoConfig,
} from '../crypto/index.js'
import { BlobStore, BlobWorkerPool, createChunker, gearTable, NativeEncoder, type SegmentSource } from '../blob/index.js'
import { FileSystem, ROOT } from '../fs/index.js'
import {
  newVolumeId,
  PackWriter,
  packKey,
  PageStore,
  readLease,
  RefNotFoundError,
  RefStore,
  Tree,
  acquireLease,
  type LeaseRecord,
  type PageRef,
  type Provenance,
  type VolumeHead,
} from '../meta/index.js'
import { diffRoots, type VolumeDiff } from './diff.js'
import { VolumeSession, type SessionOptions } from './session.js'
import {
  listAll,
  NotFoundError,
  openStore,
  PreconditionFailedError,
  probeConditionalWrites,
  S3Store,
  type ObjectStore,
  type OpenStoreOptions,
} from '../store/index.js'

export const CONFIG_KEY = 'config'

export interface VolumeInfo {
  name: string
  volumeId: string
  generation: number
  created: string
  updated: string
  origin?: Provenance
  writer?: LeaseRecord
}

export interface SnapshotInfo {
  name: string
  volume: string
  generation: number
  created: string
}

export class RepositoryExistsError extends Error {
  constructor(where: string) {
    super(`a repository already exists at ${where}; nothing was changed`)
    this.name = 'RepositoryExistsError'
  }
}

export class NoRepositoryError extends Error {
  constructor(where: string) {
    super(`no s0fs repository at ${where} (create one with: s0fs init --repo ${where})`)
    this.name = 'NoRepositoryError'
  }
}

export interface InitOptions extends OpenStoreOptions {
  /** Label stored with the first key slot. */
  label?: string
  /** Repository format to write (default: the newest). 1 keeps the repository readable by s0fs before framed blobs. */
  formatVersion?: number
}

export interface RepoInfo {
  id: string
  format: string
  version: number
  created: string
  backend: string
  url: string
  conditionalWrites: boolean
  /** The guarantee that holds for concurrent writers on this backend. */
  writerGuarantee: string
  chunking: RepoConfig['chunking']
  compression: string
  keySlots: number
  objects: number
  bytes: number
  byPrefix: Record<string, { objects: number; bytes: number }>
}

export function writerGuarantee(conditionalWrites: boolean): string {
  return conditionalWrites
    ? 'atomic: volume heads and leases are updated by compare-and-swap on the server; a second writer cannot overwrite newer state'
    : 'lease-fenced only: this server ignores conditional writes, so heads and leases are updated by read-check-write; two writers racing inside the same few milliseconds could both succeed. s0fs keeps one writer per volume with its lease, and each commit re-checks the lease and head generation first'
}

/**
 * An open repository: its store, its unlocked keys, and its config. The
 * starting point of the library API and of every CLI command.
 */
export class Repository {
  readonly refs: RefStore
  readonly pages: PageStore
  private blobs?: Promise<BlobStore>
  private segmentSource?: SegmentSource
  private indexLoading?: Promise<void>
  private pool?: BlobWorkerPool

  private constructor(
    readonly store: ObjectStore,
    readonly keys: RepoKeys,
    private configState: { config: RepoConfig; etag: string },
    readonly url: string,
  ) {
    this.refs = new RefStore(store, keys)
    this.pages = new PageStore(store, keys)
  }

  get config(): RepoConfig {
    return this.configState.config
  }

  get id(): string {
    return this.config.id
  }

  /** Creates a repository at `url`, probing the backend and sealing the master key in a first slot. */
  static async init(url: string, credential: Credential, options: InitOptions = {}): Promise<Repository> {
    const probeStore = openStore(url, { ...options, conditionalWrites: true })
    try {
      if (await probeStore.head(CONFIG_KEY)) throw new RepositoryExistsError(probeStore.displayUrl)
      const conditionalWrites = probeStore.capabilities.atomicConditionalWrites && (await probeConditionalWrites(probeStore, `probe-${randomBytes(8).toString('hex')}`))
      const config = newConfig({ conditionalWrites, backend: backendName(probeStore) })
      if (options.formatVersion !== undefined) {
        if (!Number.isInteger(options.formatVersion) || options.formatVersion < 1 || options.formatVersion > FORMAT_VERSION) {
          throw new ConfigError(`format version ${options.formatVersion} is not one this s0fs writes (1 to ${FORMAT_VERSION})`)
        }
        config.version = options.formatVersion
      }
      const master = randomBytes(32)
      await addSlot(config, master, credential, options.label)
      const keys = new RepoKeys(master, config.id)
      const store = withConditionalWrites(probeStore, conditionalWrites)
      let etag: string
      try {
        // Two concurrent inits: put-if-absent lets exactly one win (where the server honours it).
        etag = (await store.putIfAbsent(CONFIG_KEY, encodeConfig(config, keys))).etag
      } catch (err) {
        if (err instanceof PreconditionFailedError) throw new RepositoryExistsError(store.displayUrl)
        throw err
      }
      const stored = await store.getVersioned(CONFIG_KEY)
      return new Repository(store, keys, { config: parseConfig(stored.data, store.displayUrl), etag: stored.etag || etag }, url)
    } catch (err) {
      await probeStore.close()
      throw err
    }
  }

  /** Opens an existing repository; a wrong key or altered config fails here, before anything is read or written. */
  static async open(url: string, credential: Credential, options: OpenStoreOptions = {}): Promise<Repository> {
    const plain = openStore(url, options)
    try {
      let stored: { data: Buffer; etag: string }
      try {
        stored = await plain.getVersioned(CONFIG_KEY)
      } catch (err) {
        if (err instanceof NotFoundError) throw new NoRepositoryError(url)
        throw err
      }
      const config = parseConfig(stored.data, plain.displayUrl)
      const { master } = await unlock(config, credential)
      const keys = new RepoKeys(master, config.id)
      verifyConfig(config, keys, plain.displayUrl)
      const store = withConditionalWrites(plain, config.storage.conditionalWrites)
      return new Repository(store, keys, { config, etag: stored.etag }, url)
    } catch (err) {
      await plain.close()
      throw err
    }
  }

  listKeySlots(): KeySlot[] {
    return this.config.slots.map((s) => ({ ...s, wrapped: '' }))
  }

  /** Adds a key slot for another passphrase or key file; data is not re-encrypted. */
  async addKeySlot(credential: Credential, label?: string): Promise<KeySlot> {
    return this.updateConfig(async (config) => addSlot(config, this.keys.master, credential, label))
  }

  /** Removes a key slot; refuses to remove the last one (the data would become unreadable). */
  async removeKeySlot(slotId: string): Promise<void> {
    await this.updateConfig(async (config) => {
      const index = config.slots.findIndex((s) => s.id === slotId)
      if (index < 0) throw new RefNotFoundError('key slot', slotId, `slots: ${config.slots.map((s) => s.id).join(', ')}`)
      if (config.slots.length === 1) throw new ConfigError(`refusing to remove key slot ${slotId}: it is the last one, and without it nobody can open the repository`)
      config.slots.splice(index, 1)
    })
  }

  async info(): Promise<RepoInfo> {
    const byPrefix: Record<string, { objects: number; bytes: number }> = {}
    let objects = 0
    let bytes = 0
    for await (const obj of listAll(this.store, '')) {
      const prefix = obj.key.includes('/') ? obj.key.slice(0, obj.key.indexOf('/')) : obj.key
      const entry = (byPrefix[prefix] ??= { objects: 0, bytes: 0 })
      entry.objects++
      entry.bytes += obj.size
      objects++
      bytes += obj.size
    }
    return {
      id: this.config.id,
      format: this.config.format,
      version: this.config.version,
      created: this.config.created,
      backend: this.config.storage.backend,
      url: this.store.displayUrl,
      conditionalWrites: this.config.storage.conditionalWrites,
      writerGuarantee: writerGuarantee(this.config.storage.conditionalWrites),
      chunking: this.config.chunking,
      compression: this.config.compression,
      keySlots: this.config.slots.length,
      objects,
      bytes,
      byPrefix,
    }
  }

  /**
   * The shared blob store. Its worker threads start on the first write; with
   * `forWriting`, the repository's blob index (for deduplication) loads in
   * the background — until it is in, a blob already in the bucket may be
   * stored again, which is harmless and which GC repacks.
   */
  blobStore(options: { forWriting?: boolean } = {}): Promise<BlobStore> {
    this.blobs ??= (async () => {
      // Framed blobs (see blob/codec.ts) only where every reader understands them: format 2 and later.
      const frames = this.config.version >= 2
      this.pool = new BlobWorkerPool({ master: this.keys.master, repoId: this.id, chunking: this.config.chunking, frames })
      const chunker = createChunker(this.config.chunking, gearTable(this.keys.key('chunker')))
      return new BlobStore(this.store, this.keys, {
        pool: this.pool,
        // With the native addon the workers never start: its encoder runs on the libuv thread pool.
        encoder: NativeEncoder.create(this.keys, frames),
        frames,
        localChunker: chunker.native ? chunker : undefined,
        source: this.segmentSource,
      })
    })()
    if (options.forWriting && !this.indexLoading) {
      this.indexLoading = this.blobs.then((b) => b.loadIndex()).catch(() => undefined)
    }
    return this.blobs
  }

  /** Reads segments through `source` (the portal's cache); call before the blob store is first used. */
  useSegmentSource(source: SegmentSource): void {
    if (this.blobs) throw new Error('useSegmentSource must be called before the blob store is used')
    this.segmentSource = source
  }

  // --- volumes ------------------------------------------------------------

  /** Creates an empty volume whose root directory belongs to `owner`. */
  async createVolume(name: string, owner: { uid: number; gid: number; mode?: number } = { uid: 0, gid: 0 }): Promise<VolumeInfo> {
    if (await this.refs.getVolume(name)) throw new (await import('../meta/index.js')).RefExistsError('volume', name)
    const tree = new Tree(this.pages)
    await FileSystem.format(tree, owner)
    const root = await this.persistTree(tree)
    const now = new Date().toISOString()
    const head: VolumeHead = { kind: 'volume', name, volumeId: newVolumeId(), generation: 1, root, created: now, updated: now }
    await this.refs.createVolume(head)
    return this.describe(head)
  }

  async listVolumes(): Promise<VolumeInfo[]> {
    return Promise.all((await this.refs.listVolumes()).map((h) => this.describe(h)))
  }

  async volumeInfo(name: string): Promise<VolumeInfo> {
    return this.describe((await this.refs.requireVolume(name)).head)
  }

  /** Deletes a volume's head; data shared with snapshots and forks stays until GC finds it unreferenced. */
  async deleteVolume(name: string): Promise<void> {
    const { head } = await this.refs.requireVolume(name)
    const lease = await acquireLease(this.store, this.keys, name, head.volumeId, { purpose: 'volume delete', ttlMs: 15_000 })
    try {
      await this.refs.deleteVolume(name)
    } finally {
      await lease.release().catch(() => undefined)
    }
    await this.store.deleteMany([lease.key])
  }

  /** Records a volume's current head as an immutable snapshot: O(1), a pointer copy. */
  async createSnapshot(volume: string, name: string): Promise<SnapshotInfo> {
    const { head } = await this.refs.requireVolume(volume)
    const created = new Date().toISOString()
    await this.refs.createSnapshot({ kind: 'snapshot', name, volume, volumeId: head.volumeId, generation: head.generation, root: head.root, created })
    return { name, volume, generation: head.generation, created }
  }

  /**
   * Snapshots, or those of `volume`: of the volume now by that name (not of
   * an earlier one deleted before it was created), or, if there is none, of
   * the deleted volumes that had it.
   */
  async listSnapshots(volume?: string): Promise<SnapshotInfo[]> {
    const current = volume === undefined ? undefined : await this.refs.getVolume(volume)
    const found = (await this.refs.listSnapshots()).filter((s) => volume === undefined || (s.volume === volume && (!current || s.volumeId === current.head.volumeId)))
    if (volume !== undefined && !current && found.length === 0) throw new RefNotFoundError('volume', volume)
    return found.map((s) => ({ name: s.name, volume: s.volume, generation: s.generation, created: s.created }))
  }

  async deleteSnapshot(name: string): Promise<void> {
    await this.refs.deleteSnapshot(name)
  }

  /** A new volume starting at a volume's head or a snapshot's root: O(1), shares every page and blob. */
  async fork(source: string, newName: string): Promise<VolumeInfo> {
    const { root, origin } = await this.resolveRoot(source)
    const now = new Date().toISOString()
    const head: VolumeHead = { kind: 'volume', name: newName, volumeId: newVolumeId(), generation: 1, root, created: now, updated: now, origin }
    await this.refs.createVolume(head)
    return this.describe(head)
  }

  /**
   * Points a volume's head at a snapshot's root (taking the volume's lease,
   * so not while a writer has it). The replaced root stays in the bucket
   * until GC.
   */
  async restore(volume: string, snapshot: string): Promise<VolumeInfo> {
    const snap = await this.refs.requireSnapshot(snapshot)
    const found = await this.refs.requireVolume(volume)
    const lease = await acquireLease(this.store, this.keys, volume, found.head.volumeId, { purpose: 'restore', ttlMs: 15_000 })
    let next: VolumeHead
    try {
      const { head, etag } = await this.refs.requireVolume(volume)
      next = {
        ...head,
        generation: head.generation + 1,
        root: snap.root,
        previousRoot: head.root,
        updated: new Date().toISOString(),
        origin: { kind: 'snapshot', name: snapshot, generation: snap.generation },
        writer: undefined,
      }
      await this.refs.updateVolume(next, etag)
    } finally {
      await lease.release().catch(() => undefined)
    }
    return this.describe(next) // after the release: the restore's own lease is not a writer to report
  }

  /** Added, removed and modified paths between two volumes or snapshots. */
  async diff(a: string, b: string): Promise<VolumeDiff> {
    const [ra, rb] = await Promise.all([this.resolveRoot(a), this.resolveRoot(b)])
    return diffRoots(this.pages, ra.root ?? undefined, rb.root ?? undefined)
  }

  /** Opens a volume for reading and writing (taking its lease), read-only, or a snapshot. */
  async openVolume(name: string, options: SessionOptions): Promise<VolumeSession> {
    return VolumeSession.open(this, name, options)
  }

  /** A volume's head root, or a snapshot's root, by name. */
  async resolveRoot(name: string): Promise<{ root: PageRef | null; origin: Provenance }> {
    const volume = await this.refs.getVolume(name)
    if (volume) return { root: volume.head.root, origin: { kind: 'volume', name, generation: volume.head.generation } }
    const snap = await this.refs.getSnapshot(name)
    if (snap) return { root: snap.root, origin: { kind: 'snapshot', name, generation: snap.generation } }
    throw new RefNotFoundError('volume or snapshot', name)
  }

  private async persistTree(tree: Tree): Promise<PageRef | null> {
    const root = tree.freeze()
    if (!root) return null
    const pack = new PackWriter(this.keys)
    const { ref } = Tree.persist(root, pack)
    if (pack.pageCount > 0) await this.store.put(packKey(pack.id), pack.finish())
    return ref
  }

  private async describe(head: VolumeHead): Promise<VolumeInfo> {
    const lease = await readLease(this.store, this.keys, head.name).catch(() => undefined)
    const info: VolumeInfo = { name: head.name, volumeId: head.volumeId, generation: head.generation, created: head.created, updated: head.updated }
    if (head.origin) info.origin = head.origin
    if (lease && lease.record.expires > Date.now()) info.writer = lease.record
    return info
  }

  async close(): Promise<void> {
    await this.pool?.close()
    await this.store.close()
  }

  /** Read-modify-write of the config under compare-and-swap, re-reading on a lost race. */
  private async updateConfig<T>(change: (config: RepoConfig) => Promise<T>): Promise<T> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const config: RepoConfig = structuredClone(this.configState.config)
      const result = await change(config)
      try {
        const { etag } = await this.store.putIfMatch(CONFIG_KEY, encodeConfig(config, this.keys), this.configState.etag)
        const stored = await this.store.getVersioned(CONFIG_KEY)
        this.configState = { config: parseConfig(stored.data, this.store.displayUrl), etag: stored.etag || etag }
        return result
      } catch (err) {
        if (!(err instanceof PreconditionFailedError)) throw err
        const stored = await this.store.getVersioned(CONFIG_KEY)
        const fresh = parseConfig(stored.data, this.store.displayUrl)
        verifyConfig(fresh, this.keys, this.store.displayUrl)
        this.configState = { config: fresh, etag: stored.etag }
      }
    }
    throw new ConfigError('the repository config keeps changing under us; try again')
  }
}

function backendName(store: ObjectStore): string {
  return store.displayUrl.split(':')[0]
}

function withConditionalWrites(store: ObjectStore, supported: boolean): ObjectStore {
  const inner = (store as { inner?: ObjectStore }).inner ?? store
  if (inner instanceof S3Store) inner.setConditionalWrites(supported)
  return store
}
