import { spawn } from 'node:child_process'
import { closeSync, existsSync, openSync, promises as fsp, writeSync } from 'node:fs'
import path from 'node:path'
import { createKeyFile, type Credential } from '../../crypto/index.js'
import { run } from '../../fuse/device.js'
import { controlRequest } from '../../mount/control.js'
import { flushKernelCache } from '../../mount/kernel-flush.js'
import { MountDaemon } from '../../mount/daemon.js'
import { applyDaemonRuntime, DAEMON_ENV, DAEMON_NODE_FLAGS } from '../../mount/runtime.js'
import { canonicalMountpoint, mountState, readRecord, recordPaths } from '../../mount/registry.js'
import { NoRepositoryError, Repository } from '../../repo/index.js'
import { createLogger, type Level } from '../../util/log.js'
import type { Command, CommandContext } from '../command.js'
import { defaultPaths, repoUrl, resolveCredential } from '../credentials.js'
import { CliError, EXIT, exitCodeFor, UsageError } from '../exit-codes.js'
import { parseBytes, parseHostPort } from '../format.js'
import { processAlive } from '../../util/process.js'

const DEFAULT_CACHE_BYTES = 8 * 1024 * 1024 * 1024


export const mountCommand: Command = {
  path: ['mount'],
  summary: 'Mount a volume (starts a daemon; returns once the mount is ready).',
  description: [
    'With only a MOUNTPOINT and no --repo, mounts volume "default" of the embedded local repository',
    `(${defaultPaths().repoDir}), creating the repository, its key file (mode 0600) and the volume on first use.`,
    'fsync makes data durable in the local log (--sync local, the default) or in the bucket (--sync remote).',
  ].join('\n'),
  positionals: [
    { name: 'VOLUME', description: 'volume to mount (default: "default")', optional: true },
    { name: 'MOUNTPOINT', description: 'directory to mount it on (created if missing)' },
  ],
  options: {
    foreground: { type: 'boolean', short: 'f', description: 'stay in the foreground (log to stderr) instead of starting a daemon' },
    'read-only': { type: 'boolean', description: 'mount read-only (no lease is taken)' },
    snapshot: { type: 'string', value: 'NAME', description: 'mount this snapshot (read-only)' },
    sync: { type: 'string', value: 'local|remote', description: 'what fsync waits for: the local log (default) or the bucket' },
    'lease-ttl': { type: 'string', value: 'SECONDS', description: 'write lease time to live: the longest store outage writes continue through (default 90)' },
    'sync-timeout': { type: 'string', value: 'SECONDS', description: 'with --sync remote: fsync answers EIO after this long without the bucket (default 60)' },
    'cache-dir': { type: 'string', value: 'DIR', description: `node-local portal: log and cache (default ${defaultPaths().cacheDir}/portal)` },
    'cache-size': { type: 'string', value: 'BYTES', description: 'portal byte cap, dirty data included (default 8G)' },
    'allow-other': { type: 'boolean', description: 'let users other than the mounting one use the mount' },
    'writeback-cache': {
      type: 'boolean',
      description: "let the kernel buffer writes until close or fsync (much faster small random writes; a daemon crash loses what was written to still-open files since their last fsync)",
    },
    'no-xattrs': {
      type: 'boolean',
      description: 'switch extended attributes off (programs get EOPNOTSUPP): spares the kernel a getxattr round trip before each new file\'s first write and each chown (tar -x 15-20% faster here)',
    },
    'busy-poll': {
      type: 'string',
      value: 'MICROSECONDS',
      description: 'after each request, keep reading for the next one this long before sleeping: lower latency for programs working through files, for up to that much CPU per request (default 50, or 0 on a single CPU; 0 turns it off)',
    },
    create: { type: 'boolean', description: 'create the volume if it does not exist' },
    'commit-interval': { type: 'string', value: 'SECONDS', description: 'commit to the bucket at least this often while writing (default 5)' },
    metrics: { type: 'string', value: 'HOST:PORT', description: 'serve Prometheus metrics at http://HOST:PORT/metrics (port 0 picks one; see s0fs stats)' },
    'log-format': { type: 'string', value: 'text|json', description: 'daemon log format (default text)' },
    'log-level': { type: 'string', value: 'LEVEL', description: 'debug, info (default), warn or error' },
    'ready-fd': { type: 'string', value: 'FD', description: '(internal) report readiness on this file descriptor' },
    'key-stdin': { type: 'boolean', description: '(internal) read the passphrase from standard input' },
  },
  examples: ['s0fs mount ~/work', 's0fs mount --repo s3://bucket/s0fs agent-42 /mnt/agent --create', 's0fs mount --snapshot before-upgrade agent-42 /mnt/old'],
  async run(ctx) {
    const [volumeArg, mountpointArg] = ctx.positionals.length === 1 ? [undefined, ctx.positionals[0]] : ctx.positionals
    const mountpoint = path.resolve(mountpointArg)
    const volume = volumeArg ?? 'default'
    const sync = (ctx.values.sync as string | undefined) ?? 'local'
    if (sync !== 'local' && sync !== 'remote') throw new UsageError(`--sync must be local or remote, got ${JSON.stringify(sync)}`)
    const format = (ctx.values['log-format'] as string | undefined) ?? 'text'
    if (format !== 'text' && format !== 'json') throw new UsageError('--log-format must be text or json')
    const level = (ctx.values['log-level'] as string | undefined) ?? (ctx.values.verbose ? 'debug' : 'info')
    if (!['debug', 'info', 'warn', 'error'].includes(level)) throw new UsageError('--log-level must be debug, info, warn or error')
    let cacheBytes = DEFAULT_CACHE_BYTES
    if (ctx.values['cache-size']) {
      try {
        cacheBytes = parseBytes(ctx.values['cache-size'] as string)
      } catch (err) {
        throw new UsageError((err as Error).message)
      }
      if (cacheBytes < 64 * 1024 * 1024) throw new UsageError('--cache-size must be at least 64M')
    }
    const interval = ctx.values['commit-interval'] === undefined ? 5 : Number(ctx.values['commit-interval'])
    if (!(interval > 0)) throw new UsageError('--commit-interval must be a positive number of seconds')
    const snapshot = ctx.values.snapshot as string | undefined
    const metrics = ctx.values.metrics === undefined ? undefined : parseHostPort(ctx.values.metrics as string, '--metrics')
    const leaseTtl = ctx.values['lease-ttl'] === undefined ? 90 : Number(ctx.values['lease-ttl'])
    if (!(leaseTtl >= 3)) throw new UsageError('--lease-ttl must be at least 3 seconds')
    const busyPoll = ctx.values['busy-poll'] === undefined ? undefined : Number(ctx.values['busy-poll'])
    if (busyPoll !== undefined && !(Number.isInteger(busyPoll) && busyPoll >= 0 && busyPoll <= 10_000)) {
      throw new UsageError('--busy-poll must be a whole number of microseconds from 0 to 10000')
    }
    const syncTimeout = ctx.values['sync-timeout'] === undefined ? 60 : Number(ctx.values['sync-timeout'])
    if (!(syncTimeout > 0)) throw new UsageError('--sync-timeout must be a positive number of seconds')

    if (!ctx.values.foreground) return startBackground(ctx, mountpoint)

    const readyFd = ctx.values['ready-fd'] === undefined ? undefined : Number(ctx.values['ready-fd'])
    applyDaemonRuntime()
    const log = createLogger({ format, level: level as Level })
    try {
      const { url, isDefault } = repoUrl(ctx.values)
      const credential = ctx.values['key-stdin'] ? await passphraseFromStdin() : await resolveCredential(ctx.values, ctx.io, { isDefaultRepo: isDefault, create: isDefault })
      const repo = await openOrCreateDefault(url, isDefault, credential)
      if (snapshot && volumeArg) {
        const snap = await repo.refs.requireSnapshot(snapshot)
        if (snap.volume !== volumeArg) throw new UsageError(`snapshot ${snapshot} is of volume ${snap.volume}, not ${volumeArg} (name its volume, or only the snapshot and the mountpoint)`)
      }
      const daemon = new MountDaemon({
        repo,
        repoDisplay: repo.store.displayUrl,
        volume,
        mountpoint,
        readOnly: !!ctx.values['read-only'],
        snapshot,
        sync,
        cacheDir: (ctx.values['cache-dir'] as string | undefined) ?? path.join(defaultPaths().cacheDir, 'portal'),
        cacheBytes,
        allowOther: !!ctx.values['allow-other'],
        writebackCache: !!ctx.values['writeback-cache'],
        xattrs: !ctx.values['no-xattrs'],
        busyPollUs: busyPoll,
        create: !!ctx.values.create || (isDefault && volume === 'default'),
        commitIntervalMs: interval * 1000,
        syncTimeoutMs: syncTimeout * 1000,
        leaseTtlMs: leaseTtl * 1000,
        metrics,
        runDir: defaultPaths().runDir,
        log,
      })
      try {
        await daemon.start()
      } catch (err) {
        await repo.close().catch(() => undefined)
        throw err
      }
      if (readyFd !== undefined) reportReady(readyFd, { ok: true })
      await daemon.done
      // Anything still holding the event loop (a stuck request) must not keep a stopped daemon alive.
      setTimeout(() => process.exit(EXIT.ok), 200).unref()
      return EXIT.ok
    } catch (err) {
      if (readyFd !== undefined) reportReady(readyFd, { ok: false, error: (err as Error).message, exitCode: exitCodeFor(err) })
      throw err
    }
  },
}

/** Opens the repository; the embedded default is created (with its key file) on first use. */
async function openOrCreateDefault(url: string, isDefault: boolean, credential: Credential): Promise<Repository> {
  try {
    return await Repository.open(url, credential)
  } catch (err) {
    if (!(isDefault && err instanceof NoRepositoryError)) throw err
    return Repository.init(url, credential, { label: 'embedded default' })
  }
}

function reportReady(fd: number, message: Record<string, unknown>): void {
  try {
    writeSync(fd, JSON.stringify(message) + '\n')
    closeSync(fd)
  } catch {
    // the parent went away
  }
}

async function passphraseFromStdin(): Promise<Credential> {
  const chunks: Buffer[] = []
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
  const passphrase = Buffer.concat(chunks).toString('utf8').replace(/\n$/, '')
  if (!passphrase) throw new UsageError('no passphrase on standard input')
  return { kind: 'passphrase', passphrase }
}

/** Starts `s0fs mount -f` as a detached daemon and waits until it reports the mount ready (or failed). */
async function startBackground(ctx: CommandContext, mountpoint: string): Promise<number> {
  const { isDefault } = repoUrl(ctx.values)
  // Resolve the key here, so a prompt happens on this terminal and a bad key fails fast.
  if (isDefault && !existsSync(defaultPaths().keyFile) && !process.env.S0FS_PASSPHRASE && !ctx.values['key-file'] && !process.env.S0FS_KEY_FILE) {
    await createKeyFile(defaultPaths().keyFile)
    ctx.io.err(`created key file ${defaultPaths().keyFile} (mode 0600) for the embedded repository\n`)
  }
  const credential = await resolveCredential(ctx.values, ctx.io, { isDefaultRepo: isDefault })
  const prompted = credential.kind === 'passphrase' && process.env.S0FS_PASSPHRASE === undefined
  const args = process.argv.slice(2).filter((a) => a !== '--foreground')
  args.push('--foreground', '--ready-fd', '3')
  if (prompted) args.push('--key-stdin')
  await fsp.mkdir(mountpoint, { recursive: true }).catch(() => undefined)
  const logFile = recordPaths(defaultPaths().runDir, canonicalMountpoint(mountpoint)).log
  await fsp.mkdir(path.dirname(logFile), { recursive: true, mode: 0o700 })
  const logFd = openSync(logFile, 'a', 0o600)
  const bin = process.argv[1]
  const child = spawn(process.execPath, [...DAEMON_NODE_FLAGS, bin, ...args], {
    detached: true,
    stdio: [prompted ? 'pipe' : 'ignore', logFd, logFd, 'pipe'],
    env: { ...process.env, ...DAEMON_ENV },
  })
  if (prompted) child.stdin!.end((credential as { passphrase: string }).passphrase + '\n')
  const ready = await new Promise<{ ok: boolean; error?: string; exitCode?: number }>((resolve) => {
    let text = ''
    const pipe = child.stdio[3] as NodeJS.ReadableStream
    pipe.setEncoding('utf8')
    pipe.on('data', (d: string) => (text += d))
    pipe.on('end', () => {
      try {
        resolve(JSON.parse(text.split('\n')[0]))
      } catch {
        resolve({ ok: false, error: `the mount daemon exited before it was ready; see ${logFile}` })
      }
    })
    child.on('exit', (code) => {
      if (!text) resolve({ ok: false, error: `the mount daemon exited (status ${code}) before it was ready; see ${logFile}` })
    })
  })
  child.unref()
  ;(child.stdio[3] as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.()
  if (!ready.ok) throw new CliError(ready.error ?? 'mount failed', ready.exitCode ?? EXIT.error)
  if (ctx.values.verbose) ctx.io.err(`mounted at ${mountpoint} (daemon pid ${child.pid}, log ${logFile})\n`)
  return EXIT.ok
}

export const umountCommand: Command = {
  path: ['umount'],
  summary: 'Unmount: flush, commit, release the lease, unmount. Cleans up a mount left dead by a killed daemon.',
  description: 'A mount that is busy (open files, a shell standing in it) is refused with exit status 7, as umount(8) refuses it; --lazy detaches it anyway.',
  positionals: [{ name: 'MOUNTPOINT', description: 'where the volume is mounted' }],
  options: {
    lazy: { type: 'boolean', description: 'detach a busy mount at once; files still open get ENOTCONN once the daemon stops (10 s later)' },
  },
  async run(ctx) {
    const mountpoint = canonicalMountpoint(path.resolve(ctx.positionals[0]))
    const runDir = defaultPaths().runDir
    const record = await readRecord(runDir, mountpoint)
    if (record && processAlive(record.pid)) {
      await flushKernelCache(record)
      const reply = await controlRequest(record.socket, { op: 'unmount', lazy: ctx.values.lazy === true }, 30 * 60_000)
      if (ctx.values.verbose) ctx.io.err(`unmounted ${mountpoint} (volume ${record.volume}, generation ${reply.generation})\n`)
      return EXIT.ok
    }
    const state = await mountState(mountpoint)
    if (state === 'none') throw new CliError(`${mountpoint} is not mounted`, EXIT.notFound)
    // No daemon: a dead mount (killed daemon), or one we have no record of.
    const r = await run('umount', state === 'dead' ? ['-l', mountpoint] : [mountpoint])
    if (r.code !== 0) throw new CliError(`umount ${mountpoint} failed: ${r.stderr.trim()}`, EXIT.error)
    if (state === 'dead') ctx.io.err(`cleaned up a dead mount at ${mountpoint}; its changes are in the local log and the next mount replays them\n`)
    return EXIT.ok
  },
}

