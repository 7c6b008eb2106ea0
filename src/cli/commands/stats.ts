import path from 'node:path'
import { controlRequest } from '../../mount/control.js'
import { canonicalMountpoint, readRecord } from '../../mount/registry.js'
import { processAlive } from '../../util/process.js'
import type { Command } from '../command.js'
import { defaultPaths } from '../credentials.js'
import { CliError, EXIT, UsageError } from '../exit-codes.js'
import { formatBytes } from '../format.js'

type Status = Record<string, unknown> & {
  ops: Record<string, { count: number; errors: number; bytes: number; ms: number }>
  store: Record<string, number>
  cache: Record<string, number>
  fuse?: { busyPolled: number }
}

/** Rates between two status samples of the mount daemon. */
export interface StatsSample {
  volume: string
  mountpoint: string
  seconds: number
  opsPerSecond: Record<string, number>
  errorsPerSecond: number
  /** Requests the daemon caught while busy polling (mount --busy-poll). */
  busyPolledPerSecond: number
  fuseReadBytesPerSecond: number
  fuseWriteBytesPerSecond: number
  bucketUpBytesPerSecond: number
  bucketDownBytesPerSecond: number
  bucketRequestsPerSecond: Record<string, number>
  /** Portal cache hits ÷ lookups in this interval (null without lookups). */
  cacheHitRatio: number | null
  cacheBytes: number
  dirtyBytes: number
  logBytes: number
  pendingUploadBytes: number
  lastCommitAgeSeconds: number
  generation: number
  lease: unknown
  rssBytes: number
}

function rates(a: Status, b: Status, seconds: number): StatsSample {
  const per = (x: number, y: number) => Math.round(((y - x) / seconds) * 10) / 10
  const opsPerSecond: Record<string, number> = {}
  let errors = 0
  for (const [op, s] of Object.entries(b.ops)) {
    const before = a.ops[op] ?? { count: 0, errors: 0, bytes: 0 }
    const r = per(before.count, s.count)
    if (r > 0) opsPerSecond[op] = r
    errors += s.errors - before.errors
  }
  const opBytes = (op: string) => per(a.ops[op]?.bytes ?? 0, b.ops[op]?.bytes ?? 0)
  const lookups = b.cache.hits + b.cache.misses - a.cache.hits - a.cache.misses
  return {
    volume: String(b.volume),
    mountpoint: String(b.mountpoint),
    seconds,
    opsPerSecond: Object.fromEntries(Object.entries(opsPerSecond).sort((x, y) => y[1] - x[1])),
    errorsPerSecond: Math.round((errors / seconds) * 10) / 10,
    busyPolledPerSecond: per(a.fuse?.busyPolled ?? 0, b.fuse?.busyPolled ?? 0),
    fuseReadBytesPerSecond: opBytes('read'),
    fuseWriteBytesPerSecond: opBytes('write'),
    bucketUpBytesPerSecond: per(a.store.bytesOut, b.store.bytesOut),
    bucketDownBytesPerSecond: per(a.store.bytesIn, b.store.bytesIn),
    bucketRequestsPerSecond: Object.fromEntries(['get', 'put', 'list', 'delete'].map((k) => [k, per(a.store[k], b.store[k])])),
    cacheHitRatio: lookups > 0 ? Math.round(((b.cache.hits - a.cache.hits) / lookups) * 1000) / 1000 : null,
    cacheBytes: Number(b.cacheBytes),
    dirtyBytes: Number(b.dirtyBytes),
    logBytes: Number(b.walBytes),
    pendingUploadBytes: Number(b.pendingUploadBytes),
    lastCommitAgeSeconds: Number(b.lastCommitAgeSeconds),
    generation: Number(b.generation),
    lease: b.lease,
    rssBytes: Number(b.rssBytes),
  }
}

function describe(s: StatsSample): string {
  const ops = Object.entries(s.opsPerSecond).slice(0, 8).map(([op, r]) => `${op} ${r}`).join(', ') || 'idle'
  const lease = s.lease as { expires?: string; lost?: boolean } | undefined
  return [
    `${s.volume} at ${s.mountpoint}: generation ${s.generation}, last commit ${s.lastCommitAgeSeconds} s ago, ${lease ? (lease.lost ? 'write lease LOST' : `lease held until ${lease.expires}`) : 'read-only'}`,
    `  ops/s       ${ops}${s.errorsPerSecond ? ` (errors ${s.errorsPerSecond}/s)` : ''}`,
    `  FUSE        read ${formatBytes(s.fuseReadBytesPerSecond)}/s, write ${formatBytes(s.fuseWriteBytesPerSecond)}/s`,
    `  bucket      up ${formatBytes(s.bucketUpBytesPerSecond)}/s, down ${formatBytes(s.bucketDownBytesPerSecond)}/s; requests/s ${Object.entries(s.bucketRequestsPerSecond).map(([k, v]) => `${k} ${v}`).join(', ')}`,
    `  portal      cache ${formatBytes(s.cacheBytes)}, hit ratio ${s.cacheHitRatio === null ? '—' : `${(s.cacheHitRatio * 100).toFixed(1)}%`}; dirty ${formatBytes(s.dirtyBytes)}, log ${formatBytes(s.logBytes)}, pending uploads ${formatBytes(s.pendingUploadBytes)}`,
    `  memory      ${formatBytes(s.rssBytes)} resident`,
    '',
  ].join('\n')
}

export const statsCommand: Command = {
  path: ['stats'],
  summary: "A mount's live numbers: ops/s per FUSE operation, bytes in and out, cache hit ratio, dirty bytes, uploads, commits, lease.",
  description: 'Samples the mount daemon over its control socket every --interval seconds. On a terminal it keeps reporting until interrupted (with --json, once); otherwise it reports --count times (default 1). The same numbers are served to Prometheus by `s0fs mount --metrics HOST:PORT`.',
  positionals: [{ name: 'MOUNTPOINT', description: 'where the volume is mounted' }],
  options: {
    interval: { type: 'string', value: 'SECONDS', description: 'sampling interval (default 1)' },
    count: { type: 'string', value: 'N', description: 'number of reports (default: until interrupted on a terminal, else 1)' },
    json: { type: 'boolean', description: 'one JSON object per report' },
  },
  async run(ctx) {
    const interval = ctx.values.interval === undefined ? 1 : Number(ctx.values.interval)
    if (!(interval > 0)) throw new UsageError('--interval must be a positive number of seconds')
    const count = ctx.values.count === undefined ? (process.stdout.isTTY && !ctx.values.json ? Infinity : 1) : Number(ctx.values.count)
    if (!(count >= 1)) throw new UsageError('--count must be a positive integer')
    const mountpoint = canonicalMountpoint(path.resolve(ctx.positionals[0]))
    const record = await readRecord(defaultPaths().runDir, mountpoint)
    if (!record || !processAlive(record.pid)) throw new CliError(`no s0fs mount daemon serves ${mountpoint}`, EXIT.notFound)
    let before = (await controlRequest(record.socket, { op: 'status' })) as Status
    let t0 = performance.now()
    for (let i = 0; i < count; i++) {
      await new Promise((r) => setTimeout(r, interval * 1000))
      const after = (await controlRequest(record.socket, { op: 'status' })) as Status
      const t1 = performance.now()
      const sample = rates(before, after, (t1 - t0) / 1000)
      ctx.io.out(ctx.values.json ? JSON.stringify(sample) + '\n' : describe(sample))
      before = after
      t0 = t1
    }
  },
}
