import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'

/**
 * The mount daemon's numbers in the Prometheus text format
 * (`s0fs mount --metrics 127.0.0.1:PORT`, GET /metrics). Built from the same
 * status object `s0fs stats` reads over the control socket, so the two
 * always agree.
 */

type Status = Record<string, unknown>

function num(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : 0
}

function labelValue(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')
}

export function prometheusText(status: Status): string {
  const volume = labelValue(String(status.volume ?? ''))
  const lines: string[] = []
  const metric = (name: string, type: 'counter' | 'gauge', help: string, samples: [Record<string, string>, number][]) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`)
    for (const [labels, value] of samples) {
      const all = { volume, ...labels }
      lines.push(`${name}{${Object.entries(all).map(([k, v]) => `${k}="${v}"`).join(',')}} ${value}`)
    }
  }
  const ops = (status.ops ?? {}) as Record<string, { count: number; errors: number; bytes: number; ms: number }>
  const opEntries = Object.entries(ops)
  metric('s0fs_fuse_requests_total', 'counter', 'FUSE requests answered, by operation', opEntries.map(([op, s]) => [{ op }, num(s.count)]))
  metric('s0fs_fuse_errors_total', 'counter', 'FUSE requests answered with an error, by operation', opEntries.map(([op, s]) => [{ op }, num(s.errors)]))
  metric('s0fs_fuse_bytes_total', 'counter', 'bytes read or written through FUSE, by operation', opEntries.filter(([, s]) => s.bytes > 0).map(([op, s]) => [{ op }, num(s.bytes)]))
  metric('s0fs_fuse_seconds_total', 'counter', 'time spent answering FUSE requests, by operation', opEntries.map(([op, s]) => [{ op }, num(s.ms) / 1000]))
  const fuse = (status.fuse ?? {}) as { busyPolled?: number }
  metric('s0fs_fuse_busy_polled_total', 'counter', 'FUSE requests read while busy polling (see mount --busy-poll)', [[{}, num(fuse.busyPolled)]])
  const store = (status.store ?? {}) as Record<string, number>
  metric('s0fs_store_requests_total', 'counter', 'object-store requests, by kind', ['get', 'put', 'head', 'list', 'delete'].map((kind) => [{ kind }, num(store[kind])]))
  metric('s0fs_store_bytes_total', 'counter', 'object-store bytes, by direction', [
    [{ direction: 'in' }, num(store.bytesIn)],
    [{ direction: 'out' }, num(store.bytesOut)],
  ])
  metric('s0fs_store_retries_total', 'counter', 'object-store requests retried', [[{}, num(store.retries)]])
  metric('s0fs_store_errors_total', 'counter', 'object-store requests that failed after their retries', [[{}, num(store.errors)]])
  const cache = (status.cache ?? {}) as Record<string, number>
  metric('s0fs_portal_cache_hits_total', 'counter', 'segment reads answered by the portal cache', [[{}, num(cache.hits)]])
  metric('s0fs_portal_cache_misses_total', 'counter', 'segment reads that went to the bucket', [[{}, num(cache.misses)]])
  metric('s0fs_portal_cache_bytes', 'gauge', 'bytes in the portal segment cache', [[{}, num(status.cacheBytes)]])
  metric('s0fs_dirty_bytes', 'gauge', 'written bytes not yet stored as blobs', [[{}, num(status.dirtyBytes)]])
  metric('s0fs_log_bytes', 'gauge', 'bytes in the local write-ahead log', [[{}, num(status.walBytes)]])
  metric('s0fs_pending_upload_bytes', 'gauge', 'sealed segment bytes not yet confirmed in the bucket', [[{}, num(status.pendingUploadBytes)]])
  metric('s0fs_generation', 'gauge', 'the volume head generation this mount has committed', [[{}, num(status.generation)]])
  metric('s0fs_last_commit_age_seconds', 'gauge', 'seconds since the last commit attempt', [[{}, num(status.lastCommitAgeSeconds)]])
  const lease = status.lease as { lost?: boolean } | undefined
  metric('s0fs_lease_held', 'gauge', '1 while this mount holds the write lease', [[{}, lease && !lease.lost ? 1 : 0]])
  metric('s0fs_resident_memory_bytes', 'gauge', 'resident set size of the daemon', [[{}, num(status.rssBytes)]])
  return lines.join('\n') + '\n'
}

/** Serves GET /metrics on host:port (port 0 picks one); resolves with the bound address. */
export async function serveMetrics(host: string, port: number, status: () => Status): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('only GET /metrics\n')
      return
    }
    const text = prometheusText(status())
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8', 'content-length': Buffer.byteLength(text) }).end(text)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => resolve())
  })
  server.unref()
  const bound = server.address() as AddressInfo
  return { server, url: `http://${host.includes(':') ? `[${host}]` : host}:${bound.port}/metrics` }
}
