import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import http from 'node:http'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BIN, runCli } from '../helpers/cli.js'
import { fileBackend, mustSh, withKeyFile, type Backend } from '../helpers/mount.js'

/**
 * `s0fs serve` as a real process on 127.0.0.1, driven over HTTP: auth on
 * every route, confinement of paths, limits, JSON errors, files with
 * ranges, tar both ways, volume management and the change stream.
 */

const TOKEN = 'test-token-' + randomBytes(12).toString('hex')
let backend: Backend
let server: ChildProcess
let base = ''

async function startServer(extra: string[] = []): Promise<{ child: ChildProcess; url: string }> {
  const tokenFile = path.join(backend.home, 'token')
  const child = spawn(process.execPath, [BIN, 'serve', '--repo', backend.repo!, '--listen', '127.0.0.1:0', '--token-file', tokenFile, ...extra], {
    env: { ...process.env, ...backend.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const url = await new Promise<string>((resolve, reject) => {
    let text = ''
    const timer = setTimeout(() => reject(new Error(`serve did not start: ${text}`)), 30_000)
    child.stderr!.on('data', (d) => {
      text += d
      const m = /listening url=(http:\/\/[0-9.]+:\d+)/.exec(text)
      if (m) {
        clearTimeout(timer)
        resolve(m[1])
      }
    })
    child.on('exit', (code) => reject(new Error(`serve exited ${code}: ${text}`)))
  })
  return { child, url }
}

const auth = { authorization: `Bearer ${TOKEN}` }
const api = (p: string, init: RequestInit = {}) => fetch(base + p, { ...init, headers: { ...auth, ...(init.headers ?? {}) } })
const json = async (p: string, method: string, body?: unknown) => {
  const r = await api(p, { method, headers: { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) })
  return { status: r.status, body: r.status === 204 ? undefined : await r.json() }
}

/** A request with the path exactly as given (fetch would normalize "..").*/
/** A PUT with the headers given; `hangUp` closes the connection after sending `body` (a client that went away). */
function rawPut(rawPath: string, headers: Record<string, string>, body: Buffer, hangUp = false): Promise<{ status: number }> {
  const { hostname, port } = new URL(base)
  return new Promise((resolve, reject) => {
    const req = http.request({ hostname, port, method: 'PUT', path: rawPath, headers: { ...auth, ...headers } }, (res) => {
      res.resume()
      res.on('end', () => resolve({ status: res.statusCode ?? 0 }))
    })
    req.on('error', (err) => (hangUp ? setTimeout(() => resolve({ status: 0 }), 500) : reject(err)))
    if (hangUp) {
      req.write(body, () => setTimeout(() => req.destroy(), 200))
    } else req.end(body)
  })
}

/** Starts a download, reads a little of it, and hangs up. */
function abandonedGet(rawPath: string): Promise<void> {
  const { hostname, port } = new URL(base)
  return new Promise((resolve, reject) => {
    const req = http.request({ hostname, port, method: 'GET', path: rawPath, headers: auth }, (res) => {
      expect(res.statusCode).toBe(200)
      res.once('data', () => {
        req.destroy()
        setTimeout(resolve, 300)
      })
    })
    req.on('error', (err) => ((err as NodeJS.ErrnoException).code === 'ECONNRESET' ? undefined : reject(err)))
    req.end()
  })
}

function rawRequest(method: string, rawPath: string, headers: Record<string, string> = auth): Promise<{ status: number; body: string }> {
  const { hostname, port } = new URL(base)
  return new Promise((resolve, reject) => {
    const req = http.request({ hostname, port, method, path: rawPath, headers }, (res) => {
      let body = ''
      res.on('data', (d) => (body += d))
      res.on('end', () => resolve({ status: res.statusCode!, body }))
    })
    req.on('error', reject)
    req.end()
  })
}

beforeAll(async () => {
  backend = await withKeyFile(fileBackend)
  writeFileSync(path.join(backend.home, 'token'), TOKEN + '\n', { mode: 0o600 })
  const started = await startServer(['--max-upload', '8M'])
  server = started.child
  base = started.url
}, 120_000)

afterAll(() => {
  server?.kill('SIGTERM')
  backend?.cleanup()
})

describe('s0fs serve', () => {
  it('refuses a readable token file and a missing one', async () => {
    const loose = path.join(backend.home, 'loose-token')
    writeFileSync(loose, TOKEN)
    chmodSync(loose, 0o644)
    const r = await runCli(['serve', '--repo', backend.repo!, '--token-file', loose], { env: backend.env })
    expect(r.code).toBe(5)
    expect(r.stderr).toMatch(/readable by others.*chmod 600/)
    const none = await runCli(['serve', '--repo', backend.repo!], { env: backend.env })
    expect(none.code).toBe(2)
    expect(none.stderr).toMatch(/--token-file is required/)
  }, 60_000)

  it('answers 401 on every route without the right token', async () => {
    const routes = ['GET /v1/openapi.json', 'GET /v1/volumes', 'POST /v1/volumes', 'GET /v1/volumes/x', 'DELETE /v1/volumes/x', 'GET /v1/snapshots', 'POST /v1/forks', 'GET /v1/diff', 'GET /v1/volumes/x/files/a', 'PUT /v1/volumes/x/files/a', 'GET /v1/volumes/x/tar', 'GET /v1/volumes/x/events', 'GET /nowhere']
    for (const route of routes) {
      const [method, p] = route.split(' ')
      for (const headers of [{}, { authorization: 'Bearer wrong-token-0123456789' }, { authorization: `Basic ${TOKEN}` }]) {
        const r = await rawRequest(method, p, headers)
        expect({ route, status: r.status }).toEqual({ route, status: 401 })
        expect(JSON.parse(r.body).error.code).toBe('unauthorized')
      }
    }
  }, 60_000)

  it('manages volumes, snapshots, forks, diff and restore', async () => {
    expect((await json('/v1/volumes', 'POST', { name: 'api' })).status).toBe(201)
    expect((await json('/v1/volumes', 'POST', { name: 'api' })).body.error.code).toBe('exists')
    expect((await json('/v1/volumes', 'POST', { name: 'bad name' })).status).toBe(400)
    expect((await api('/v1/volumes/api/files/hello.txt', { method: 'PUT', body: 'hello' })).status).toBe(200)
    expect((await json('/v1/snapshots', 'POST', { volume: 'api', name: 'api-s1' })).status).toBe(201)
    expect((await api('/v1/volumes/api/files/hello.txt', { method: 'PUT', body: 'changed' })).status).toBe(200)
    expect((await json('/v1/forks', 'POST', { source: 'api-s1', name: 'api-fork' })).status).toBe(201)
    const diff = await json('/v1/diff?from=api-s1&to=api', 'GET')
    expect(diff.body).toEqual({ added: [], removed: [], modified: [{ path: '/hello.txt', type: 'file' }] })
    expect(await (await api('/v1/volumes/api-s1/files/hello.txt')).text()).toBe('hello')
    expect(await (await api('/v1/volumes/api-fork/files/hello.txt')).text()).toBe('hello')
    expect((await json('/v1/volumes/api/restore', 'POST', { snapshot: 'api-s1' })).status).toBe(200)
    expect(await (await api('/v1/volumes/api/files/hello.txt')).text()).toBe('hello')
    const list = await json('/v1/volumes', 'GET')
    expect(list.body.map((v: { name: string }) => v.name).sort()).toEqual(['api', 'api-fork'])
    expect((await json('/v1/volumes/api-fork', 'DELETE')).status).toBe(204)
    expect((await json('/v1/volumes/api-fork', 'GET')).status).toBe(404)
    expect((await json('/v1/snapshots?volume=api', 'GET')).body).toEqual([expect.objectContaining({ name: 'api-s1', volume: 'api' })])
    expect((await json('/v1/volumes/api-s1/files/x', 'PUT')).body.error.message).toMatch(/snapshot/)
  }, 120_000)

  it('reads, writes, ranges, lists, moves and removes files', async () => {
    await json('/v1/volumes', 'POST', { name: 'files' })
    const data = randomBytes(3 * 1024 * 1024 + 5)
    const put = await api('/v1/volumes/files/files/dir/sub/data.bin', { method: 'PUT', body: data })
    expect(put.status).toBe(404) // parent missing
    expect((await json('/v1/volumes/files/mkdir', 'POST', { path: '/dir/sub', parents: true })).status).toBe(201)
    const ok = await api('/v1/volumes/files/files/dir/sub/data.bin?mode=600', { method: 'PUT', body: data })
    expect(ok.status).toBe(200)
    expect(await ok.json()).toMatchObject({ path: '/dir/sub/data.bin', size: data.length, mode: 0o600 })
    const whole = Buffer.from(await (await api('/v1/volumes/files/files/dir/sub/data.bin')).arrayBuffer())
    expect(whole.equals(data)).toBe(true)
    const part = await api('/v1/volumes/files/files/dir/sub/data.bin', { headers: { range: 'bytes=1000000-1000099' } })
    expect(part.status).toBe(206)
    expect(part.headers.get('content-range')).toBe(`bytes 1000000-1000099/${data.length}`)
    expect(Buffer.from(await part.arrayBuffer()).equals(data.subarray(1_000_000, 1_000_100))).toBe(true)
    const tail = await api('/v1/volumes/files/files/dir/sub/data.bin', { headers: { range: 'bytes=-5' } })
    expect(Buffer.from(await tail.arrayBuffer()).equals(data.subarray(-5))).toBe(true)
    const outside = await api('/v1/volumes/files/files/dir/sub/data.bin', { headers: { range: `bytes=${data.length}-` } })
    expect(outside.status).toBe(416)
    expect(outside.headers.get('content-range')).toBe(`bytes */${data.length}`)
    // What is not served is ignored, not refused: other units, several ranges, a stale If-Range.
    for (const headers of [{ range: 'items=0-1' }, { range: 'bytes=0-1,3-4' }, { range: 'bytes=0-1', 'if-range': 'Mon, 01 Jan 2001 00:00:00 GMT' }]) {
      const r = await api('/v1/volumes/files/files/dir/sub/data.bin', { headers })
      expect(r.status).toBe(200)
      expect(Number(r.headers.get('content-length'))).toBe(data.length)
      await r.arrayBuffer()
    }
    const head = await api('/v1/volumes/files/files/dir/sub/data.bin', { method: 'HEAD' })
    expect(head.headers.get('content-length')).toBe(String(data.length))
    expect((await json('/v1/volumes/files/files/dir?stat', 'GET')).body).toMatchObject({ type: 'dir', path: '/dir' })
    expect((await json('/v1/volumes/files/files/dir/sub', 'GET')).body.entries.map((e: { name: string }) => e.name)).toEqual(['data.bin'])
    expect((await json('/v1/volumes/files/move', 'POST', { from: '/dir/sub/data.bin', to: '/moved.bin' })).status).toBe(204)
    expect((await api('/v1/volumes/files/files/dir/sub/data.bin')).status).toBe(404)
    expect((await json('/v1/volumes/files/files/dir', 'DELETE')).body.error.code).toBe('ENOTEMPTY')
    expect((await json('/v1/volumes/files/files/dir?recursive=true', 'DELETE')).body).toEqual({ removed: 2 })
    expect((await json('/v1/volumes/files/files/', 'GET')).body.entries.map((e: { name: string }) => e.name)).toEqual(['moved.bin'])

    // A PUT over a file replaces it whole, keeping its mode; a refused or broken one leaves it as it was.
    const next = randomBytes(1024 * 1024)
    expect((await api('/v1/volumes/files/files/moved.bin', { method: 'PUT', body: next })).status).toBe(200)
    expect(await (await json('/v1/volumes/files/files/moved.bin?stat', 'GET')).body).toMatchObject({ size: next.length, mode: 0o600 })
    const declared = await rawPut('/v1/volumes/files/files/moved.bin', { 'content-length': String(2 * 1024 ** 3) }, Buffer.alloc(0))
    expect(declared.status).toBe(413)
    await rawPut('/v1/volumes/files/files/moved.bin', { 'content-length': String(next.length) }, next.subarray(0, 100_000), true)
    expect(Buffer.from(await (await api('/v1/volumes/files/files/moved.bin')).arrayBuffer()).equals(next)).toBe(true)
    // Owner ids past uid_t's range are refused.
    expect((await json('/v1/volumes', 'POST', { name: 'ids', uid: 2 ** 32 })).status).toBe(400)
  }, 120_000)

  it('keeps every path inside its volume', async () => {
    await json('/v1/volumes', 'POST', { name: 'jail' })
    for (const p of ['/v1/volumes/jail/files/%2e%2e/%2e%2e/etc/passwd', '/v1/volumes/jail/files/a/%2E%2E%2F%2E%2E%2Fetc', '/v1/volumes/jail/files/..%2f..%2fetc%2fpasswd']) {
      const r = await rawRequest('GET', p)
      expect({ p, status: r.status }).toEqual({ p, status: 400 })
      expect(JSON.parse(r.body).error.message).toMatch(/escapes the volume root/)
    }
    // Dot segments in the URL itself are refused, not resolved (they could turn a file path into another route).
    for (const p of ['/v1/volumes/jail/files/../../jail', '/v1/volumes/jail/files/./x', '/v1/volumes/jail/files/x/../../../../etc']) {
      const r = await rawRequest('DELETE', p)
      expect({ p, status: r.status }).toEqual({ p, status: 400 })
    }
    // Inside the root too: an encoded ".." is not resolved through a name that may not exist.
    const inner = await rawRequest('GET', '/v1/volumes/jail/files/nonexist/%2e%2e/x')
    expect(inner.status).toBe(400)
    expect(JSON.parse(inner.body).error.message).toMatch(/contains "\." or "\.\." segments/)
    expect((await json('/v1/volumes/jail', 'GET')).status).toBe(200)
    expect((await json('/v1/volumes/jail/move', 'POST', { from: '/nothing', to: '/../escape' })).body.error.message).toMatch(/escapes the volume root/)
  }, 60_000)

  it('imports and exports tar archives; refuses tar slip', async () => {
    await json('/v1/volumes', 'POST', { name: 'tarred' })
    const src = path.join(backend.home, 'tar-src')
    mkdirSync(path.join(src, 'a/b'), { recursive: true })
    writeFileSync(path.join(src, 'a/b/file.txt'), 'in a tar\n')
    writeFileSync(path.join(src, 'a/exec.sh'), '#!/bin/sh\n', { mode: 0o755 })
    await mustSh(`cd ${src} && ln -s b/file.txt a/link && ln a/b/file.txt a/hard && tar -cf ${backend.home}/in.tar a && tar -cf ${backend.home}/dot.tar .`)
    // An archive of "." (entries "./", "./a/" …) goes under ?path= like any other.
    const dot = await api('/v1/volumes/tarred/tar?path=/dotted', { method: 'PUT', body: readFileSync(path.join(backend.home, 'dot.tar')) })
    expect(dot.status).toBe(200)
    expect(await (await api('/v1/volumes/tarred/files/dotted/a/b/file.txt')).text()).toBe('in a tar\n')
    const imported = await api('/v1/volumes/tarred/tar?path=/imported', { method: 'PUT', body: readFileSync(path.join(backend.home, 'in.tar')) })
    expect(imported.status).toBe(200)
    expect(await imported.json()).toMatchObject({ files: 2, dirs: 2, links: 2 })
    expect(await (await api('/v1/volumes/tarred/files/imported/a/link')).text()).toBe('in a tar\n')
    expect((await json('/v1/volumes/tarred/files/imported/a/hard?stat', 'GET')).body.nlink).toBe(2)

    const exported = await api('/v1/volumes/tarred/tar?path=/imported')
    expect(exported.headers.get('content-type')).toBe('application/x-tar')
    writeFileSync(path.join(backend.home, 'out.tar'), Buffer.from(await exported.arrayBuffer()))
    const out = path.join(backend.home, 'tar-out')
    mkdirSync(out)
    await mustSh(`tar -xf ${backend.home}/out.tar -C ${out} && diff -r --no-dereference ${src}/a ${out}/a && test -x ${out}/a/exec.sh`)

    await mustSh(
      `python3 -c "import tarfile,io; t=tarfile.open('${backend.home}/slip.tar','w'); i=tarfile.TarInfo('../../outside.txt'); d=b'pwned'; i.size=len(d); t.addfile(i, io.BytesIO(d)); t.close()"`,
    )
    const slip = await api('/v1/volumes/tarred/tar?path=/imported', { method: 'PUT', body: readFileSync(path.join(backend.home, 'slip.tar')) })
    expect(slip.status).toBe(400)
    expect((await slip.json()).error.code).toBe('bad_archive')
    expect((await api('/v1/volumes/tarred/files/outside.txt')).status).toBe(404)

    // Nor through a symlink the archive itself makes; and a malformed archive is a bad request.
    await mustSh(
      `python3 -c "import tarfile,io; t=tarfile.open('${backend.home}/slip2.tar','w'); a=tarfile.TarInfo('l'); a.type=tarfile.SYMTYPE; a.linkname='/'; t.addfile(a); b=tarfile.TarInfo('l/escaped.txt'); b.size=3; t.addfile(b, io.BytesIO(b'out')); t.close()"`,
    )
    const slip2 = await api('/v1/volumes/tarred/tar?path=/jail', { method: 'PUT', body: readFileSync(path.join(backend.home, 'slip2.tar')) })
    expect(slip2.status).toBe(400)
    expect((await slip2.json()).error.message).toMatch(/through a symbolic link out of \/jail/)
    expect((await api('/v1/volumes/tarred/files/escaped.txt')).status).toBe(404)
    const garbage = await api('/v1/volumes/tarred/tar?path=/g', { method: 'PUT', body: 'garbage garbage' })
    expect(garbage.status).toBe(400)
    expect((await garbage.json()).error.code).toBe('bad_archive')

    // Exporting a file is an error reply; a client that leaves mid-archive ends only its own request.
    expect((await json('/v1/volumes/tarred/tar?path=/imported/a/exec.sh', 'GET')).body.error.code).toBe('ENOTDIR')
    await api('/v1/volumes/tarred/files/imported/big.bin', { method: 'PUT', body: randomBytes(6 * 1024 * 1024) })
    await abandonedGet('/v1/volumes/tarred/tar?path=/imported')
    await abandonedGet('/v1/volumes/tarred/files/imported/big.bin')
    expect((await json('/v1/volumes/tarred', 'GET')).status).toBe(200)
  }, 120_000)

  it('limits request sizes and answers bad requests with JSON errors', async () => {
    await json('/v1/volumes', 'POST', { name: 'limits' })
    const big = await api('/v1/volumes/limits/files/big.bin', { method: 'PUT', body: randomBytes(9 * 1024 * 1024) })
    expect(big.status).toBe(413)
    expect((await big.json()).error.code).toBe('too_large')
    const badJson = await api('/v1/volumes', { method: 'POST', body: '{not json', headers: { 'content-type': 'application/json' } })
    expect(badJson.status).toBe(400)
    expect((await badJson.json()).error.code).toBe('bad_json')
    expect((await json('/v1/volumes', 'POST', {})).body.error.message).toMatch(/"name"/)
    expect((await json('/v1/nowhere', 'GET')).status).toBe(404)
    const slash = await api('/v1/volumes/limits/files/trail/', { method: 'PUT', body: 'x' })
    expect(slash.status).toBe(400)
    expect((await slash.json()).error.code).toBe('EISDIR')
    expect((await json('/v1/volumes/limits/mkdir', 'POST', { path: '/d', mode: 448 })).status).toBe(400)
    const patch = await api('/v1/volumes', { method: 'PATCH' })
    expect(patch.status).toBe(405)
    expect(patch.headers.get('allow')).toBe('GET, HEAD, POST')
    expect((await json('/v1/diff?from=a', 'GET')).status).toBe(400)
    const badRange = await api('/v1/volumes/limits/files/', { headers: { range: 'bytes=a-b' } })
    expect(badRange.status).toBe(200) // a directory listing ignores Range
  }, 60_000)

  it('streams change events from every writer', async () => {
    await json('/v1/volumes', 'POST', { name: 'watched' })
    const controller = new AbortController()
    const events = await api('/v1/volumes/watched/events', { signal: controller.signal })
    expect(events.headers.get('content-type')).toBe('text/event-stream')
    const reader = events.body!.getReader()
    let text = ''
    const waitFor = async (pattern: RegExp) => {
      const deadline = Date.now() + 20_000
      while (!pattern.test(text)) {
        if (Date.now() > deadline) throw new Error(`no event matching ${pattern} in: ${text}`)
        const { value, done } = await reader.read()
        if (done) break
        text += Buffer.from(value).toString()
      }
    }
    await waitFor(/event: ready/)
    await api('/v1/volumes/watched/files/new.txt', { method: 'PUT', body: 'x' })
    await waitFor(/"type":"added","path":"\/new.txt"/)
    // A writer that is not this server: the CLI.
    const cli = await runCli(['put', '-', 'watched:/from-cli.txt', '--repo', backend.repo!], { env: backend.env, input: 'y' })
    expect(cli.code, cli.stderr).toBe(0)
    await waitFor(/"path":"\/from-cli.txt"/)
    // HEAD answers at once; a volume deleted and made again under the name ends the stream ("deleted").
    const head = await api('/v1/volumes/watched/events', { method: 'HEAD' })
    expect(head.status).toBe(200)
    expect((await json('/v1/volumes/watched', 'DELETE')).status).toBeLessThan(300)
    await json('/v1/volumes', 'POST', { name: 'watched' })
    await waitFor(/event: deleted/)
    controller.abort()
  }, 60_000)

  it('publishes an OpenAPI description naming every route', async () => {
    const doc = await (await api('/v1/openapi.json')).json()
    expect(doc.openapi).toMatch(/^3\./)
    for (const p of ['/v1/volumes', '/v1/volumes/{name}', '/v1/snapshots', '/v1/forks', '/v1/diff', '/v1/volumes/{name}/files/{path}', '/v1/volumes/{name}/tar', '/v1/volumes/{name}/events', '/v1/volumes/{name}/restore', '/v1/volumes/{name}/mkdir', '/v1/volumes/{name}/move']) {
      expect(Object.keys(doc.paths)).toContain(p)
    }
  }, 30_000)
})
