import { createHash, timingSafeEqual } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import path from 'node:path'
import { controlRequest } from '../mount/control.js'
import { flushKernelCache } from '../mount/kernel-flush.js'
import { commitIfMounted, findWriterMount } from '../cli/volume-access.js'
import { FsError } from '../fs/index.js'
import { volumePathComponents, type Repository } from '../repo/index.js'
import type { Logger } from '../util/log.js'
import { writeBody } from '../util/write-body.js'
import { VolumeAccess } from './access.js'
import { ChangeFeed } from './events.js'
import { errorResponse, field, HttpError, limitBody, octal, parseRange, readJson, refuseDeclaredTooLarge, sendJson } from './http.js'
import { exportTar, importTar } from './tar.js'

/**
 * `s0fs serve`: the repository over HTTP — volumes, snapshots, forks,
 * restore, diff, files (with ranges), tar import/export and a change
 * stream. Every route needs the bearer token. Paths name places inside a
 * volume and are confined to it. The routes are described in
 * docs/openapi.json (also served at /v1/openapi.json).
 */

export interface ServeOptions {
  repo: Repository
  host: string
  port: number
  token: string
  /** Node-local directory for writer sessions' logs. */
  portalDir: string
  /** Largest file or archive body accepted (bytes). */
  maxUploadBytes: number
  log: Logger
}

type Handler = (ctx: RequestContext) => Promise<void>

interface RequestContext {
  req: IncomingMessage
  res: ServerResponse
  url: URL
  params: string[]
}

interface Route {
  method: string
  pattern: RegExp
  handler: Handler
}

const OPENAPI_PATH = path.join(import.meta.dirname, '../../../docs/openapi.json')

export class ApiServer {
  private readonly routes: Route[] = []
  private readonly access: VolumeAccess
  private readonly feed: ChangeFeed
  private readonly tokenDigest: Buffer
  private server?: Server

  constructor(private readonly options: ServeOptions) {
    this.access = new VolumeAccess(options.repo, options.portalDir)
    this.feed = new ChangeFeed(options.repo)
    this.tokenDigest = digest(options.token)
    this.defineRoutes()
  }

  /** Starts listening; resolves with the address actually bound. */
  async listen(): Promise<{ host: string; port: number }> {
    const server = createServer((req, res) => void this.handle(req, res))
    // Node ends any request after 300 s by default, which cuts off a large upload on a slow link
    // (and an event stream); headers must still arrive within headersTimeout.
    server.requestTimeout = 0
    this.server = server
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(this.options.port, this.options.host, () => resolve())
    })
    const address = server.address()
    const port = typeof address === 'object' && address ? address.port : this.options.port
    return { host: this.options.host, port }
  }

  async close(): Promise<void> {
    this.feed.close()
    await new Promise<void>((resolve) => {
      if (!this.server) return resolve()
      this.server.close(() => resolve())
      this.server.closeAllConnections()
    })
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now()
    let url: URL
    try {
      url = new URL(req.url ?? '/', 'http://s0fs.local')
    } catch {
      return sendJson(res, 400, { error: { code: 'bad_request', message: 'malformed request URL' } })
    }
    try {
      this.authorize(req)
      // "." and ".." segments are refused, not resolved: resolving could turn a file path into another route.
      if (/(^|\/)\.\.?(\/|$)/.test((req.url ?? '/').split('?')[0])) throw new HttpError(400, 'bad_request', 'the request path contains "." or ".." segments')
      // Match the raw path: URL's pathname has already resolved "%2e%2e" segments.
      const route = this.match(req.method ?? 'GET', (req.url ?? '/').split('?')[0])
      await route.handler({ req, res, url, params: route.params })
    } catch (err) {
      const { status, body } = errorResponse(err)
      if (status >= 500) this.options.log.warn('request failed', { method: req.method, path: url.pathname, status, error: body.error.message })
      if (res.headersSent) res.destroy()
      else {
        if (status === 401) res.setHeader('www-authenticate', 'Bearer realm="s0fs"')
        if (err instanceof HttpError) for (const [name, value] of Object.entries(err.headers)) res.setHeader(name, value)
        sendJson(res, status, body)
      }
    } finally {
      this.options.log.debug('request', { method: req.method, path: url.pathname, status: res.statusCode, ms: Math.round(performance.now() - started) })
    }
  }

  private authorize(req: IncomingMessage): void {
    const header = req.headers.authorization
    const m = header ? /^Bearer\s+(.+)$/i.exec(header) : null
    if (!m) throw new HttpError(401, 'unauthorized', 'missing bearer token (Authorization: Bearer TOKEN)')
    // Compare digests: constant time, whatever the lengths.
    if (!timingSafeEqual(digest(m[1].trim()), this.tokenDigest)) throw new HttpError(401, 'unauthorized', 'wrong bearer token')
  }

  private match(method: string, pathname: string): { handler: Handler; params: string[] } {
    let allowed: string[] = []
    for (const r of this.routes) {
      const m = r.pattern.exec(pathname)
      if (!m) continue
      if (r.method === method || (method === 'HEAD' && r.method === 'GET')) return { handler: r.handler, params: m.slice(1).map(decodeSegment) }
      allowed.push(r.method)
    }
    if (allowed.length) {
      const allow = [...new Set(allowed.flatMap((m) => (m === 'GET' ? ['GET', 'HEAD'] : [m])))].join(', ')
      throw new HttpError(405, 'method_not_allowed', `${method} is not allowed on ${pathname} (allowed: ${allow})`, { allow })
    }
    throw new HttpError(404, 'no_route', `no such route: ${pathname} (see /v1/openapi.json)`)
  }

  private route(method: string, pattern: string, handler: Handler): void {
    // ":name" is one path segment; "*" is the rest of the path (a file path inside a volume).
    const source = pattern.replace(/:[a-z]+/g, '([^/]+)').replace('/*', '((?:/.*)?)')
    this.routes.push({ method, pattern: new RegExp(`^${source}$`), handler })
  }

  private defineRoutes(): void {
    const repo = this.options.repo
    const access = this.access
    const maxUpload = this.options.maxUploadBytes

    this.route('GET', '/v1/openapi.json', async ({ res }) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(readFileSync(OPENAPI_PATH))
    })

    // --- volumes, snapshots, forks -------------------------------------------------
    this.route('GET', '/v1/volumes', async ({ res }) => sendJson(res, 200, await repo.listVolumes()))
    this.route('POST', '/v1/volumes', async ({ req, res }) => {
      const body = await readJson(req)
      sendJson(res, 201, await repo.createVolume(field(body, 'name'), { uid: numberField(body, 'uid') ?? 0, gid: numberField(body, 'gid') ?? 0 }))
    })
    this.route('GET', '/v1/volumes/:name', async ({ res, params }) => sendJson(res, 200, { ...(await repo.volumeInfo(params[0])), snapshots: await repo.listSnapshots(params[0]) }))
    this.route('DELETE', '/v1/volumes/:name', async ({ res, params }) => {
      await repo.deleteVolume(params[0])
      res.writeHead(204).end()
    })
    this.route('GET', '/v1/snapshots', async ({ res, url }) => sendJson(res, 200, await repo.listSnapshots(url.searchParams.get('volume') ?? undefined)))
    this.route('POST', '/v1/snapshots', async ({ req, res }) => {
      const body = await readJson(req)
      const volume = field(body, 'volume')
      const name = field(body, 'name')
      const mount = await findWriterMount(repo, volume)
      if (!mount) return sendJson(res, 201, await repo.createSnapshot(volume, name))
      // Mounted here: the daemon commits and records the snapshot in one step.
      await flushKernelCache(mount)
      await controlRequest(mount.socket, { op: 'snapshot', name })
      sendJson(res, 201, (await repo.listSnapshots(volume)).find((s) => s.name === name))
    })
    this.route('DELETE', '/v1/snapshots/:name', async ({ res, params }) => {
      await repo.deleteSnapshot(params[0])
      res.writeHead(204).end()
    })
    this.route('POST', '/v1/forks', async ({ req, res }) => {
      const body = await readJson(req)
      const source = field(body, 'source')
      if (await repo.refs.getVolume(source)) await commitIfMounted(() => undefined, repo, source)
      sendJson(res, 201, await repo.fork(source, field(body, 'name')))
    })
    this.route('POST', '/v1/volumes/:name/restore', async ({ req, res, params }) => {
      const body = await readJson(req)
      sendJson(res, 200, await repo.restore(params[0], field(body, 'snapshot')))
    })
    this.route('GET', '/v1/diff', async ({ res, url }) => {
      const from = url.searchParams.get('from')
      const to = url.searchParams.get('to')
      if (!from || !to) throw new HttpError(400, 'bad_request', 'diff needs ?from=VOLUME_OR_SNAPSHOT&to=VOLUME_OR_SNAPSHOT')
      for (const name of new Set([from, to])) if (await repo.refs.getVolume(name)) await commitIfMounted(() => undefined, repo, name)
      sendJson(res, 200, await repo.diff(from, to))
    })

    // --- files -------------------------------------------------------------------------
    this.route('GET', '/v1/volumes/:name/files/*', async ({ req, res, url, params }) => {
      const [name, filePath] = params
      await access.read(name, async (files) => {
        if (url.searchParams.get('stat') !== null) return sendJson(res, 200, await files.stat(filePath || '/'))
        const st = await files.stat(filePath || '/', { follow: true })
        if (st.type === 'dir') return sendJson(res, 200, { path: st.path, entries: await files.list(st.path) })
        const lastModified = new Date(st.mtime).toUTCString()
        const ifRange = req.headers['if-range']
        const range = parseRange(req.headers.range, st.size, typeof ifRange === 'string' ? ifRange : undefined, lastModified)
        const headers: Record<string, string | number> = {
          'content-type': 'application/octet-stream',
          'accept-ranges': 'bytes',
          'last-modified': lastModified,
          'content-length': range ? range.end - range.start + 1 : st.size,
        }
        if (range) headers['content-range'] = `bytes ${range.start}-${range.end}/${st.size}`
        res.writeHead(range ? 206 : 200, headers)
        if (req.method === 'HEAD' || st.size === 0) return void res.end()
        const offset = range?.start ?? 0
        const length = range ? range.end - range.start + 1 : st.size
        for await (const chunk of files.read(st.path, { offset, length })) if (!(await writeBody(res, chunk))) return
        res.end()
      })
    })
    this.route('PUT', '/v1/volumes/:name/files/*', async ({ req, res, url, params }) => {
      const [name, filePath] = params
      // As open(2) of "name/" with O_CREAT: a trailing slash names a directory, which a PUT cannot write.
      if (filePath.endsWith('/') || filePath === '') throw new FsError('EISDIR', `/${filePath}`)
      const mode = octal(url.searchParams.get('mode'), 'mode')
      refuseDeclaredTooLarge(req, maxUpload) // before the file is touched
      const exclusive = url.searchParams.get('exclusive')
      const stat = await access.write(name, (files) => files.write(filePath, limitBody(req, maxUpload), { mode, exclusive: exclusive !== null && exclusive !== 'false', replace: true }))
      sendJson(res, 200, stat)
    })
    this.route('DELETE', '/v1/volumes/:name/files/*', async ({ res, url, params }) => {
      const [name, filePath] = params
      const recursive = url.searchParams.get('recursive') === 'true'
      sendJson(res, 200, { removed: await access.write(name, (files) => files.remove(filePath, { recursive })) })
    })
    this.route('POST', '/v1/volumes/:name/mkdir', async ({ req, res, params }) => {
      const body = await readJson(req)
      if (body.mode !== undefined && typeof body.mode !== 'string') throw new HttpError(400, 'bad_request', '"mode" must be an octal string such as "750"')
      const mode = typeof body.mode === 'string' ? octal(body.mode, 'mode') : undefined
      sendJson(res, 201, await access.write(params[0], (files) => files.mkdir(field(body, 'path'), { parents: body.parents === true, mode })))
    })
    this.route('POST', '/v1/volumes/:name/move', async ({ req, res, params }) => {
      const body = await readJson(req)
      await access.write(params[0], (files) => files.move(field(body, 'from'), field(body, 'to')))
      res.writeHead(204).end()
    })
    this.route('GET', '/v1/volumes/:name/tar', async ({ res, url, params }) => {
      await access.read(params[0], async (files) => {
        const dir = url.searchParams.get('path') ?? '/'
        // A missing path or a file is an error reply, not a broken archive.
        const root = await files.stat(dir, { follow: true })
        if (root.type !== 'dir') throw new FsError('ENOTDIR', root.path)
        res.writeHead(200, { 'content-type': 'application/x-tar' })
        await exportTar(files, root.path, res)
      })
    })
    this.route('PUT', '/v1/volumes/:name/tar', async ({ req, res, url, params }) => {
      const dir = url.searchParams.get('path') ?? '/'
      refuseDeclaredTooLarge(req, maxUpload)
      sendJson(res, 200, await access.write(params[0], (files) => importTar(files, dir, limitBody(req, maxUpload))))
    })
    this.route('GET', '/v1/volumes/:name/events', async ({ req, res, params }) => this.feed.subscribe(params[0], res, req.method === 'HEAD'))
  }
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest()
}

function decodeSegment(s: string | undefined): string {
  let decoded: string
  try {
    decoded = decodeURIComponent(s ?? '')
  } catch {
    throw new HttpError(400, 'bad_request', `malformed percent-encoding in ${JSON.stringify(s)}`)
  }
  // Percent-encoded dot segments are refused like plain ones: resolving them lexically would pass through
  // names that are not there (and symlinks would resolve them differently). One that climbs above the root
  // is reported as that (volumePathComponents says so).
  if (decoded.split('/').some((part) => part === '.' || part === '..')) {
    volumePathComponents(decoded)
    throw new HttpError(400, 'bad_request', `the path ${JSON.stringify(decoded)} contains "." or ".." segments`)
  }
  return decoded
}

function numberField(body: Record<string, unknown>, name: string): number | undefined {
  const v = body[name]
  if (v === undefined) return undefined
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new HttpError(400, 'bad_request', `"${name}" must be a non-negative integer`)
  if ((name === 'uid' || name === 'gid') && v >= 0xffff_ffff) throw new HttpError(400, 'bad_request', `"${name}" must be at most 4294967294`)
  return v
}
