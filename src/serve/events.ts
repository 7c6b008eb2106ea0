import type { ServerResponse } from 'node:http'
import type { PageRef } from '../meta/index.js'
import { diffRoots, type Repository } from '../repo/index.js'

/**
 * The change stream of a volume (Server-Sent Events). Every writer — a
 * mount, the CLI, this server — publishes its changes as commits, so one
 * watcher per volume polls the head and, on each new generation, sends the
 * paths that changed since the last one (at commit granularity: a file
 * written and removed between two commits is not seen).
 *
 *   event: change
 *   data: {"type":"added","path":"/src/a.c","kind":"file","generation":12}
 */

const POLL_MS = 1_000
const HEARTBEAT_MS = 15_000

class VolumeWatcher {
  readonly clients = new Set<ServerResponse>()
  private timer?: NodeJS.Timeout
  private polling = false

  constructor(
    private readonly repo: Repository,
    private readonly volume: string,
    /** The volume followed: a volume deleted and created again under its name is another one. */
    readonly volumeId: string,
    /** The head the next change events are relative to; a new client's "ready" names it. */
    public generation: number,
    private root: PageRef | null,
    private readonly onEmpty: () => void,
  ) {}

  start(): void {
    this.timer = setInterval(() => void this.poll(), POLL_MS)
    this.timer.unref()
  }

  add(res: ServerResponse): void {
    this.clients.add(res)
    res.on('close', () => {
      this.clients.delete(res)
      if (this.clients.size === 0) {
        clearInterval(this.timer)
        this.onEmpty()
      }
    })
  }

  private async poll(): Promise<void> {
    if (this.polling) return
    this.polling = true
    try {
      const found = await this.repo.refs.getVolume(this.volume)
      if (!found || found.head.volumeId !== this.volumeId) {
        this.send('deleted', { volume: this.volume })
        for (const c of this.clients) c.end()
        return
      }
      const head = found.head
      if (head.generation === this.generation) return
      const diff = await diffRoots(this.repo.pages, this.root ?? undefined, head.root ?? undefined)
      for (const [type, list] of [['added', diff.added], ['removed', diff.removed], ['modified', diff.modified]] as const) {
        for (const e of list) this.send('change', { type, path: e.path, kind: e.type, generation: head.generation })
      }
      this.send('commit', { generation: head.generation, updated: head.updated })
      this.generation = head.generation
      this.root = head.root
    } catch (err) {
      this.send('warning', { message: `could not read the volume's head: ${(err as Error).message}` })
    } finally {
      this.polling = false
    }
  }

  send(event: string, data: unknown): void {
    const text = `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`
    for (const c of this.clients) c.write(text)
  }
}

export class ChangeFeed {
  private readonly watchers = new Map<string, VolumeWatcher>()
  private readonly heartbeat: NodeJS.Timeout

  constructor(private readonly repo: Repository) {
    this.heartbeat = setInterval(() => {
      for (const w of this.watchers.values()) for (const c of w.clients) c.write(': keep-alive\n\n')
    }, HEARTBEAT_MS)
    this.heartbeat.unref()
  }

  /**
   * Streams `volume`'s changes to `res`. "ready" names the generation the
   * events that follow start after: a client joining a stream others
   * already follow gets that stream's, so no change is sent twice to it.
   */
  async subscribe(volume: string, res: ServerResponse, headOnly = false): Promise<void> {
    const { head } = await this.repo.refs.requireVolume(volume)
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' })
    if (headOnly) return void res.end()
    let watcher = this.watchers.get(volume)
    // A watcher of an earlier volume of this name (its clients are being told 'deleted') is not this one's.
    if (!watcher || watcher.volumeId !== head.volumeId) {
      const created: VolumeWatcher = new VolumeWatcher(this.repo, volume, head.volumeId, head.generation, head.root, () => {
        if (this.watchers.get(volume) === created) this.watchers.delete(volume)
      })
      watcher = created
      this.watchers.set(volume, watcher)
      watcher.start()
    }
    res.write(`event: ready\ndata: ${JSON.stringify({ volume, generation: watcher.generation })}\n\n`)
    watcher.add(res)
  }

  close(): void {
    clearInterval(this.heartbeat)
    for (const w of this.watchers.values()) for (const c of w.clients) c.end()
  }
}
