/**
 * Local S3 servers for the tests and the benchmark: a patched s3rver
 * (s3rver-main.mjs, a child process) and a single-node Ceph RADOS Gateway
 * (ceph-rgw.sh, daemons tracked by pid files). Both are cleaned up by
 * `stop()`, and killed synchronously if this process exits first.
 * Facts and defects: README.md in this directory.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

/**
 * The AWS SDK, loaded lazily with Node's own require: imported normally, vitest
 * runs it through its module transformer in globalSetup, which takes ~4.5 s.
 */
function awsSdk(): typeof import('@aws-sdk/client-s3') {
  return createRequire(import.meta.url)('@aws-sdk/client-s3') as typeof import('@aws-sdk/client-s3')
}

const HERE = path.dirname(fileURLToPath(import.meta.url))
const S3RVER_MAIN = path.join(HERE, 's3rver-main.mjs')
const CEPH_RGW_SH = path.join(HERE, 'ceph-rgw.sh')

export const TEST_BUCKET = 's0fs-test'

export interface S3TestServer {
  name: 's3rver' | 'ceph' | 'external'
  /** e.g. http://127.0.0.1:PORT; use path-style addressing. */
  endpoint: string
  bucket: string
  accessKeyId: string
  secretAccessKey: string
  region: string
  /** True when If-None-Match: * and If-Match PUTs are honoured atomically. */
  conditionalWrites: boolean
  /** Key prefix the tests must stay under (external servers only; '' or absent otherwise). */
  prefix?: string
  stop(): Promise<void>
}

/** A server descriptor without its stop function: what globalSetup hands to the tests. */
export type S3ServerInfo = Omit<S3TestServer, 'stop'>

export function serverInfo(server: S3TestServer): S3ServerInfo {
  const { stop: _stop, ...info } = server
  return info
}

// ------------------------------------------------- cleanup on process exit
/** Synchronous killers, run on 'exit' and on a fatal signal. */
const killers = new Set<() => void>()
let hooksInstalled = false

function runKillers(): void {
  for (const kill of [...killers]) {
    try {
      kill()
    } catch {
      // best effort: the process is going away
    }
  }
  killers.clear()
}

function onFatalSignal(signal: NodeJS.Signals): void {
  runKillers()
  // If nobody else handles this signal, restore the default action (terminate).
  if (process.listenerCount(signal) === 1) {
    process.removeListener(signal, onFatalSignal)
    process.kill(process.pid, signal)
  }
}

function registerKiller(kill: () => void): () => void {
  if (!hooksInstalled) {
    hooksInstalled = true
    process.on('exit', runKillers)
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, onFatalSignal)
  }
  killers.add(kill)
  return () => killers.delete(kill)
}

// ------------------------------------------------------------------ helpers
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer()
    srv.unref()
    srv.on('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo
      srv.close(() => resolve(port))
    })
  })
}

function tempDir(kind: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `s0fs-${kind}-`))
}

// ------------------------------------------------------------------- s3rver
/**
 * Starts test/servers/s3rver-main.mjs on a free port of 127.0.0.1 with bucket
 * `s0fs-test`. `conditional: false` makes it ignore If-None-Match/If-Match,
 * like stock s3rver (for the non-atomic fallback path). A temporary `dir` is
 * removed by stop().
 */
export async function startS3rver(opts: { conditional?: boolean; dir?: string } = {}): Promise<S3TestServer> {
  const conditional = opts.conditional ?? true
  const ownDir = opts.dir === undefined
  const dir = opts.dir ?? tempDir('s3rver')
  const args = ['--openssl-legacy-provider', S3RVER_MAIN, '--port', '0', '--dir', dir, '--watch-stdin']
  if (!conditional) args.push('--no-conditional')
  if (ownDir) args.push('--remove-dir')
  // stdin is a pipe the child watches: if this process dies, the child sees EOF and exits.
  const child: ChildProcess = spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'pipe'], detached: false })
  const unregister = registerKiller(() => {
    child.kill('SIGKILL')
    if (ownDir) fs.rmSync(dir, { recursive: true, force: true })
  })
  let stderrTail = ''
  child.stderr!.setEncoding('utf8')
  child.stderr!.on('data', (chunk: string) => {
    stderrTail = (stderrTail + chunk).slice(-4000)
    process.stderr.write(chunk.replace(/^(?=.)/gm, '[s3rver] '))
  })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  child.stdin!.on('error', () => {}) // EPIPE once the child is gone: nothing to do

  const port = await new Promise<number>((resolve, reject) => {
    let out = ''
    const timer = setTimeout(() => fail(new Error('s3rver did not start within 20 s')), 20_000)
    const fail = (err: Error) => {
      clearTimeout(timer)
      child.kill('SIGKILL')
      reject(new Error(`${err.message}${stderrTail ? `\n${stderrTail}` : ''}`))
    }
    const onEarlyExit = (code: number | null, signal: NodeJS.Signals | null) =>
      fail(new Error(`s3rver exited early (code ${code}, signal ${signal})`))
    child.once('error', fail)
    child.once('exit', onEarlyExit)
    child.stdout!.setEncoding('utf8')
    child.stdout!.on('data', (chunk: string) => {
      out += chunk
      const nl = out.indexOf('\n')
      if (nl < 0) return
      clearTimeout(timer)
      child.removeListener('exit', onEarlyExit)
      child.removeListener('error', fail)
      child.on('error', () => {}) // a failed kill() later: the exit handling copes
      try {
        resolve((JSON.parse(out.slice(0, nl)) as { port: number }).port)
      } catch {
        fail(new Error(`s3rver printed ${JSON.stringify(out.slice(0, nl))} instead of {"port":N}`))
      }
    })
  }).catch((err) => {
    unregister()
    if (ownDir) fs.rmSync(dir, { recursive: true, force: true })
    throw err
  })

  let stopped: Promise<void> | undefined
  return {
    name: 's3rver',
    endpoint: `http://127.0.0.1:${port}`,
    bucket: TEST_BUCKET,
    accessKeyId: 'S3RVER',
    secretAccessKey: 'S3RVER',
    region: 'us-east-1',
    conditionalWrites: conditional,
    stop() {
      stopped ??= (async () => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill('SIGTERM')
          const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
          await exited
          clearTimeout(timer)
        }
        unregister()
        if (ownDir) fs.rmSync(dir, { recursive: true, force: true })
      })()
      return stopped
    },
  }
}

// --------------------------------------------------------------------- Ceph
const CEPH_DAEMON_COMMANDS = new Set(['ceph-mon', 'ceph-osd', 'ceph-mgr', 'radosgw'])

/** SIGKILLs every live Ceph daemon that has a pid file under DIR/run (synchronous). */
function killCephSync(dir: string): void {
  let files: string[]
  try {
    files = fs.readdirSync(path.join(dir, 'run')).filter((f) => f.endsWith('.pid'))
  } catch {
    return
  }
  for (const f of files) {
    try {
      const pid = Number(fs.readFileSync(path.join(dir, 'run', f), 'utf8').trim())
      const comm = fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim()
      if (pid > 1 && CEPH_DAEMON_COMMANDS.has(comm)) process.kill(pid, 'SIGKILL')
    } catch {
      // gone already
    }
  }
}

function runScript(args: string[], timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile('bash', [CEPH_RGW_SH, ...args], { timeout: timeoutMs, maxBuffer: 1 << 20 }, (err, _stdout, stderr) => {
      if (err) reject(new Error(`ceph-rgw.sh ${args[0]} failed: ${err.message}\n${stderr}`))
      else resolve()
    })
  })
}

/**
 * Starts a single-node Ceph cluster with radosgw on 127.0.0.1 (ceph-rgw.sh)
 * and creates bucket `s0fs-test`. State lives in `dir` (temporary by
 * default, removed by stop()). ~5-10 s; needs .ci/install-ceph.sh.
 */
export async function startCephRgw(opts: { dir?: string; port?: number } = {}): Promise<S3TestServer> {
  const ownDir = opts.dir === undefined
  const dir = path.resolve(opts.dir ?? tempDir('ceph'))
  const port = opts.port ?? (await freePort())
  const unregister = registerKiller(() => killCephSync(dir))
  // The daemons are not our children: if this process is SIGKILLed, no
  // handler runs. A watchdog holds a pipe from us and, at its EOF, stops them
  // (and removes a temporary dir).
  const watchdog = spawn(
    'bash',
    [
      '-c',
      'trap "" INT TERM HUP; while read -r _; do :; done; bash "$0" stop "$1" >/dev/null 2>&1; [ "$2" = rm ] && rm -rf "$1"',
      CEPH_RGW_SH,
      dir,
      ownDir ? 'rm' : 'keep',
    ],
    { stdio: ['pipe', 'ignore', 'ignore'], detached: false },
  )
  watchdog.on('error', () => {})
  watchdog.stdin!.on('error', () => {})
  watchdog.unref()
  ;(watchdog.stdin as unknown as net.Socket).unref()
  const cleanup = async () => {
    await runScript(['stop', dir], 60_000).catch(() => killCephSync(dir))
    unregister()
    // EOF makes the watchdog run `stop` once more: a no-op now
    if (watchdog.exitCode === null && watchdog.signalCode === null) {
      const gone = new Promise((resolve) => watchdog.once('exit', resolve))
      watchdog.stdin!.end()
      const timer = setTimeout(() => watchdog.kill('SIGKILL'), 5000)
      await gone
      clearTimeout(timer)
    }
    if (ownDir) fs.rmSync(dir, { recursive: true, force: true })
  }
  const server: S3TestServer = {
    name: 'ceph',
    endpoint: `http://127.0.0.1:${port}`,
    bucket: TEST_BUCKET,
    accessKeyId: 's0fs-test',
    secretAccessKey: 's0fs-test-secret',
    region: 'us-east-1',
    conditionalWrites: true,
    stop: (() => {
      let stopped: Promise<void> | undefined
      return () => (stopped ??= cleanup())
    })(),
  }
  try {
    await runScript(['start', dir, String(port)], 90_000)
    const { CreateBucketCommand, S3Client } = awsSdk()
    const client = new S3Client({
      endpoint: server.endpoint,
      region: server.region,
      forcePathStyle: true,
      credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
    })
    try {
      await client.send(new CreateBucketCommand({ Bucket: server.bucket }))
    } catch (err) {
      if ((err as { name?: string }).name !== 'BucketAlreadyOwnedByYou') throw err
    } finally {
      client.destroy()
    }
  } catch (err) {
    await server.stop()
    throw err
  }
  return server
}

// ----------------------------------------------------------------- external
/**
 * An external S3 (MinIO, AWS, ...) from `S0FS_TEST_S3_URL`:
 * `s3://bucket/prefix?endpoint=http://host:port[&region=R][&conditional=false]`
 * with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY. Undefined when unset.
 * Nothing is started; stop() does nothing.
 */
export function externalS3FromEnv(env: NodeJS.ProcessEnv = process.env): S3TestServer | undefined {
  const raw = env.S0FS_TEST_S3_URL
  if (!raw) return undefined
  const url = new URL(raw)
  if (url.protocol !== 's3:' || !url.hostname) {
    throw new Error(`S0FS_TEST_S3_URL must look like s3://bucket/prefix?endpoint=http://host:port, got ${raw}`)
  }
  const accessKeyId = env.AWS_ACCESS_KEY_ID
  const secretAccessKey = env.AWS_SECRET_ACCESS_KEY
  if (!accessKeyId || !secretAccessKey) {
    throw new Error('S0FS_TEST_S3_URL needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY')
  }
  let prefix = decodeURIComponent(url.pathname.replace(/^\/+/, ''))
  if (prefix && !prefix.endsWith('/')) prefix += '/'
  return {
    name: 'external',
    endpoint: url.searchParams.get('endpoint') ?? `https://s3.${env.AWS_REGION ?? 'us-east-1'}.amazonaws.com`,
    bucket: url.hostname,
    accessKeyId,
    secretAccessKey,
    region: url.searchParams.get('region') ?? env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? 'us-east-1',
    conditionalWrites: url.searchParams.get('conditional') !== 'false',
    prefix,
    stop: async () => {},
  }
}
