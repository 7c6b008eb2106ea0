import http from 'node:http'
import type { AddressInfo, Socket } from 'node:net'

/**
 * An HTTP proxy in front of an S3 server that injects the faults real object
 * stores produce: 500 InternalError, 503 SlowDown, latency spikes, and a
 * full outage (connections reset). The mount daemon talks to it as to any
 * endpoint, so faults arrive through the real SDK and network stack.
 *
 * It runs in the test (or soak) process: that process must then never make
 * a blocking call into the mount, or the daemon would wait on a proxy that
 * cannot run.
 */

/**
 * Rates are applied by request count, not by chance (0.1 = every 10th
 * request), so a test sees the faults it asked for however few requests
 * s0fs's batching leaves.
 */
export interface FaultSettings {
  /** Fraction of requests answered 500 InternalError. */
  errorRate: number
  /** Fraction answered 503 SlowDown. */
  slowDownRate: number
  /** Fraction delayed by spikeMs before being forwarded. */
  spikeRate: number
  spikeMs: number
  /** Every connection is reset at once. */
  down: boolean
}

export interface FaultCounters {
  requests: number
  forwarded: number
  errors: number
  slowDowns: number
  spikes: number
  reset: number
}

export class FaultProxy {
  readonly settings: FaultSettings = { errorRate: 0, slowDownRate: 0, spikeRate: 0, spikeMs: 500, down: false }
  readonly counters: FaultCounters = { requests: 0, forwarded: 0, errors: 0, slowDowns: 0, spikes: 0, reset: 0 }
  private server?: http.Server
  private readonly sockets = new Set<Socket>()

  constructor(private readonly target: URL) {}

  /** Starts listening on 127.0.0.1; returns the endpoint to give s0fs instead of the target. */
  async start(): Promise<string> {
    const server = http.createServer((req, res) => void this.handle(req, res))
    server.on('connection', (socket) => {
      if (this.settings.down) {
        this.counters.reset++
        socket.destroy()
        return
      }
      this.sockets.add(socket)
      socket.on('close', () => this.sockets.delete(socket))
    })
    this.server = server
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()))
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  }

  /** A full outage: open connections are reset, and so is every new one, until up(). */
  down(): void {
    this.settings.down = true
    for (const s of this.sockets) s.destroy()
    this.sockets.clear()
  }

  up(): void {
    this.settings.down = false
  }

  set(settings: Partial<FaultSettings>): void {
    Object.assign(this.settings, settings)
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy()
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()))
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    this.counters.requests++
    const s = this.settings
    if (s.down) {
      this.counters.reset++
      req.socket.destroy()
      return
    }
    const n = this.counters.requests
    const every = (rate: number, offset: number) => rate > 0 && (n + offset) % Math.max(1, Math.round(1 / rate)) === 0
    if (every(s.errorRate, 0)) return this.fail(req, res, 500, 'InternalError', 'We encountered an internal error. Please try again.', 'errors')
    if (every(s.slowDownRate, 3)) return this.fail(req, res, 503, 'SlowDown', 'Please reduce your request rate.', 'slowDowns')
    if (every(s.spikeRate, 1)) {
      this.counters.spikes++
      await new Promise((r) => setTimeout(r, s.spikeMs))
    }
    const upstream = http.request(
      // A fresh upstream connection per request: a kept-alive one the server has just closed would turn into a reset the proxy did not mean.
      { host: this.target.hostname, port: this.target.port, method: req.method, path: req.url, headers: req.headers, agent: false },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers)
        up.pipe(res)
      },
    )
    upstream.on('error', () => res.destroy())
    // A client that goes away (an outage reset it) takes its upstream request with it.
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy()
    })
    req.pipe(upstream)
    this.counters.forwarded++
  }

  /** Answers with an S3 error document, after reading (and dropping) the request body. */
  private fail(req: http.IncomingMessage, res: http.ServerResponse, status: number, code: string, message: string, counter: 'errors' | 'slowDowns'): void {
    this.counters[counter]++
    req.resume()
    req.on('end', () => {
      const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message><RequestId>s0fs-fault-proxy</RequestId></Error>`
      res.writeHead(status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body) })
      res.end(body)
    })
  }
}
