import { spawn, spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, beforeAll } from 'vitest'
import { canonicalMountpoint, readRecord, s0fsDevice } from '../../src/mount/registry.js'
import { sleep } from '../../src/store/index.js'
import { runCli, type CliResult } from './cli.js'
import { s3Credentials, s3Url, type S3ServerInfo } from './stores.js'

/**
 * Real mounts for end-to-end tests: each backend gets its own HOME (so the
 * runtime directory, portal and embedded repository are private), the
 * daemon is the real `s0fs mount` child process, and teardown always leaves
 * nothing mounted (s0fs umount, then umount -l and SIGKILL as fallbacks).
 */

export interface Backend {
  name: string
  /** Environment for every s0fs command of this backend (HOME, key, S3 credentials). */
  env: NodeJS.ProcessEnv
  /** --repo URL, or undefined for the embedded default repository. */
  repo?: string
  home: string
  cleanup(): void
}

export const PASSPHRASE = 'e2e passphrase'

export async function fileBackend(): Promise<Backend> {
  const home = mkdtempSync(path.join(tmpdir(), 's0fs-home-'))
  const repo = `file://${path.join(home, 'repo')}`
  const env = { HOME: home, S0FS_PASSPHRASE: PASSPHRASE, XDG_RUNTIME_DIR: '' }
  await mustCli(['init', '--repo', repo], env)
  return { name: 'file', env, repo, home, cleanup: () => rmSync(home, { recursive: true, force: true }) }
}

export async function s3Backend(server: S3ServerInfo): Promise<Backend> {
  const home = mkdtempSync(path.join(tmpdir(), 's0fs-home-'))
  const creds = s3Credentials(server)
  const env = { HOME: home, S0FS_PASSPHRASE: PASSPHRASE, AWS_ACCESS_KEY_ID: creds.accessKeyId, AWS_SECRET_ACCESS_KEY: creds.secretAccessKey, XDG_RUNTIME_DIR: '' }
  const repo = s3Url(server)
  await mustCli(['init', '--repo', repo], env)
  return { name: `s3:${server.name}`, env, repo, home, cleanup: () => rmSync(home, { recursive: true, force: true }) }
}

/**
 * The backend, opened with a key file instead of the passphrase: for suites
 * that run many short commands, each its own process — a key file spares
 * each one the Argon2id passphrase derivation (~1 s).
 */
export async function withKeyFile(make: () => Promise<Backend>): Promise<Backend> {
  const backend = await make()
  const keyFile = path.join(backend.home, 'suite.key')
  await mustCli(['key', 'add', '--repo', backend.repo!, '--new-key-file', keyFile], backend.env)
  return { ...backend, env: { ...backend.env, S0FS_PASSPHRASE: undefined, S0FS_KEY_FILE: keyFile } }
}

/**
 * For one describe block: a backend made before its tests and, after them,
 * teardown of every mount passed to `track`, then the backend's cleanup —
 * in that order, so no mount outlives the directory it lives in.
 */
export function useBackend(make: () => Promise<Backend> = fileBackend): { readonly backend: Backend; track(m: Mounted): Mounted } {
  const mounts: Mounted[] = []
  let current: Backend | undefined
  beforeAll(async () => {
    current = await make()
  }, 120_000)
  afterAll(async () => {
    for (const m of mounts) await m.teardown()
    current?.cleanup()
  }, 180_000)
  return {
    get backend() {
      if (!current) throw new Error('the backend is made in beforeAll; use it inside a test')
      return current
    },
    track: (m) => (mounts.push(m), m),
  }
}

export async function mustCli(args: string[], env: NodeJS.ProcessEnv, timeoutMs = 120_000): Promise<CliResult> {
  const r = await runCli(args, { env, timeoutMs })
  if (r.code !== 0) throw new Error(`s0fs ${args.join(' ')} exited ${r.code}: ${r.stderr}`)
  return r
}

export interface Mounted {
  mountpoint: string
  volume: string
  backend: Backend
  pid: number
  /** The daemon's control socket (status, commit …). */
  socket: string
  /** The mount's device, "major:minor" (its settings live in /sys/class/bdi/DEVICE). */
  device: string
  /** Clean unmount through the daemon. */
  umount(): Promise<void>
  /** SIGKILL the daemon (a crash); the mount is left dead. */
  kill(): void
  /** Always safe: unmount however possible. */
  teardown(): Promise<void>
  logTail(): string
}

export async function mountVolume(backend: Backend, options: { volume?: string; args?: string[]; mountpoint?: string } = {}): Promise<Mounted> {
  const volume = options.volume ?? 'vol'
  const mountpoint = options.mountpoint ?? path.join(backend.home, `mnt-${volume}-${Math.random().toString(36).slice(2, 8)}`)
  try {
    mkdirSync(mountpoint, { recursive: true })
  } catch (err) {
    // A mount left dead by a killed daemon: `s0fs mount` cleans it up.
    if (!['ENOTCONN', 'ECONNABORTED'].includes((err as NodeJS.ErrnoException).code ?? '')) throw err
  }
  // Resolved before mounting: afterwards realpath would stat the mount from this process, which
  // can deadlock when this process also serves something the daemon needs (a fault proxy).
  const canonical = canonicalMountpoint(mountpoint)
  const args = ['mount', ...(backend.repo ? ['--repo', backend.repo] : []), volume, mountpoint, '--create', '--cache-dir', path.join(backend.home, 'portal'), ...(options.args ?? [])]
  await mustCli(args, backend.env, 120_000)
  const runDir = path.join(backend.home, '.cache', 's0fs', 'run')
  const record = await readRecord(runDir, canonical)
  if (!record) throw new Error(`no mount record for ${mountpoint}`)
  const pid = record.pid
  const logFile = record.log
  let unmounted = false
  const device = s0fsDevice(canonical)
  if (!device) throw new Error(`no s0fs mount in /proc/self/mountinfo at ${mountpoint}`)
  const m: Mounted = {
    mountpoint,
    volume,
    backend,
    pid,
    socket: record.socket,
    device,
    async umount() {
      await mustCli(['umount', mountpoint], backend.env, 300_000)
      unmounted = true
    },
    kill() {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {
        // already gone
      }
      unmounted = true
    },
    async teardown() {
      if (!unmounted) {
        const r = await runCli(['umount', mountpoint], { env: backend.env, timeoutMs: 120_000 }).catch(() => undefined)
        if (r?.code === 0) return
      }
      forceUnmount(mountpoint, pid)
    },
    logTail() {
      try {
        return readFileSync(logFile!, 'utf8').split('\n').slice(-30).join('\n')
      } catch {
        return ''
      }
    },
  }
  return m
}

/**
 * A setting of the mount's device in sysfs (/sys/class/bdi/DEVICE/NAME) once
 * `settled` accepts it, or as it is after 5 s: the daemon sets these just
 * after INIT, in the background.
 */
export async function bdiSetting(m: Mounted, name: string, settled: (value: string) => boolean): Promise<string> {
  const read = () => readFileSync(`/sys/class/bdi/${m.device}/${name}`, 'utf8').trim()
  for (let i = 0; i < 50 && !settled(read()); i++) await sleep(100)
  return read()
}

/**
 * A setting of the mount's FUSE connection (/sys/fs/fuse/connections/N/NAME,
 * e.g. max_background), mounting the fusectl filesystem there first if the
 * machine has not. N is the device number, which for FUSE's major 0 is the minor.
 */
export async function fuseConnectionSetting(m: Mounted, name: string): Promise<string> {
  const root = '/sys/fs/fuse/connections'
  // Mounted, it lists at least this mount's connection.
  if (readdirSync(root).length === 0) await mustSh(`mount -t fusectl fusectl ${root}`)
  const [major, minor] = m.device.split(':').map(Number)
  if (major !== 0) throw new Error(`unexpected FUSE device ${m.device}`)
  return readFileSync(path.join(root, String(minor), name), 'utf8').trim()
}

/** Last resort: kill the daemon and detach the mount. */
export function forceUnmount(mountpoint: string, pid?: number): void {
  if (pid) {
    try {
      process.kill(pid, 'SIGKILL')
    } catch {
      // gone
    }
  }
  spawnSync('umount', ['-l', mountpoint], { stdio: 'ignore' })
}

/** Runs a command (in its own process: never call into a mount from its own daemon). */
export function sh(command: string, options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-c', command], { cwd: options.cwd, env: { ...process.env, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`timed out: ${command}\n${stderr}`))
    }, options.timeoutMs ?? 120_000)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({ code: code ?? -1, stdout, stderr })
    })
  })
}

export async function mustSh(command: string, options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<string> {
  const r = await sh(command, options)
  if (r.code !== 0) throw new Error(`command failed (${r.code}): ${command}\n${r.stderr}\n${r.stdout}`)
  return r.stdout
}
