import { promises as fsp } from 'node:fs'
import net from 'node:net'
import path from 'node:path'

/**
 * The mount daemon's local control socket. The socket file is mode 0600 in a
 * 0700 directory, so only the daemon's user can talk to it.
 *
 * Framing: each request and each response is one line of JSON. A message
 * with `"bytes": N` is followed by exactly N raw bytes (file data), so data
 * needs no base64. A connection carries any number of requests, answered in
 * order; per-connection state (an open write) lives in its `ControlSession`.
 */

export type ControlRequest = { op: string; bytes?: number; [key: string]: unknown }
export type ControlResponse = { ok: true; bytes?: number; [key: string]: unknown } | { ok: false; error: string; code?: string; exitCode?: number }

/** What a handler returns: JSON fields, and optionally raw bytes to send after them. */
export type ControlResult = Record<string, unknown> & { payload?: Buffer }

/** State of one client connection; `onClose` callbacks run when it ends (e.g. to abort an unfinished write). */
export class ControlSession {
  readonly state = new Map<string, unknown>()
  private readonly closers: (() => void)[] = []
  onClose(fn: () => void): void {
    this.closers.push(fn)
  }
  close(): void {
    for (const fn of this.closers.splice(0)) fn()
  }
}

export type ControlHandler = (req: ControlRequest, payload: Buffer, session: ControlSession) => Promise<ControlResult>

export class ControlError extends Error {
  constructor(
    message: string,
    readonly code?: string,
    readonly exitCode?: number,
  ) {
    super(message)
    this.name = 'ControlError'
  }
}

/** Largest payload either side accepts in one message. */
export const MAX_CONTROL_PAYLOAD = 16 * 1024 * 1024
const MAX_LINE = 1024 * 1024

/** Splits a byte stream into (JSON header, payload) messages. */
class MessageReader {
  private buffered: Buffer = Buffer.alloc(0)
  private header?: { bytes?: number; [key: string]: unknown }

  /** Feeds bytes; returns the complete messages. Throws on a malformed stream. */
  push(chunk: Buffer): { header: { bytes?: number; [key: string]: unknown }; payload: Buffer }[] {
    this.buffered = this.buffered.length ? Buffer.concat([this.buffered, chunk]) : chunk
    const out: { header: { bytes?: number; [key: string]: unknown }; payload: Buffer }[] = []
    for (;;) {
      if (!this.header) {
        const nl = this.buffered.indexOf(0x0a)
        if (nl < 0) {
          if (this.buffered.length > MAX_LINE) throw new ControlError('control message header too long')
          return out
        }
        const header = JSON.parse(this.buffered.subarray(0, nl).toString('utf8'))
        if (typeof header !== 'object' || header === null) throw new ControlError('control message is not a JSON object')
        const bytes = header.bytes ?? 0
        if (!Number.isSafeInteger(bytes) || bytes < 0 || bytes > MAX_CONTROL_PAYLOAD) throw new ControlError(`control payload of ${bytes} bytes refused`)
        this.header = header
        this.buffered = this.buffered.subarray(nl + 1)
      }
      const bytes = this.header!.bytes ?? 0
      if (this.buffered.length < bytes) return out
      out.push({ header: this.header!, payload: Buffer.from(this.buffered.subarray(0, bytes)) })
      this.buffered = this.buffered.subarray(bytes)
      this.header = undefined
    }
  }
}

function frame(message: Record<string, unknown>, payload?: Buffer): Buffer[] {
  const head = Buffer.from(JSON.stringify(payload?.length ? { ...message, bytes: payload.length } : message) + '\n')
  return payload?.length ? [head, payload] : [head]
}

export async function serveControl(socketPath: string, handler: ControlHandler): Promise<net.Server> {
  await fsp.mkdir(path.dirname(socketPath), { recursive: true, mode: 0o700 })
  await fsp.rm(socketPath, { force: true })
  const server = net.createServer((conn) => {
    const reader = new MessageReader()
    const session = new ControlSession()
    // Requests of one connection are answered in order, one at a time.
    let queue: Promise<void> = Promise.resolve()
    conn.on('data', (chunk: Buffer) => {
      let messages
      try {
        messages = reader.push(chunk)
      } catch (err) {
        conn.end(frame({ ok: false, error: (err as Error).message, code: 'EPROTO' })[0])
        return
      }
      for (const { header, payload } of messages) queue = queue.then(() => respond(header as ControlRequest, payload))
    })
    conn.on('close', () => session.close())
    conn.on('error', () => undefined)
    const respond = async (req: ControlRequest, payload: Buffer) => {
      let parts: Buffer[]
      try {
        if (typeof req.op !== 'string') throw new ControlError('request needs an "op"')
        const { payload: out, ...fields } = await handler(req, payload, session)
        parts = frame({ ok: true, ...fields }, out)
      } catch (err) {
        const e = err as Error & { code?: string; exitCode?: number }
        parts = frame({ ok: false, error: e.message, code: e.code ?? e.name, exitCode: e.exitCode })
      }
      if (!conn.destroyed) for (const p of parts) conn.write(p)
    }
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(socketPath, () => resolve())
  })
  await fsp.chmod(socketPath, 0o600)
  server.unref()
  return server
}

/** A connection to a mount daemon: requests are sent and answered one at a time, in order. */
export class ControlClient {
  private readonly conn: net.Socket
  private readonly reader = new MessageReader()
  private readonly waiting: { resolve: (m: { res: ControlResponse; payload: Buffer }) => void; reject: (e: Error) => void }[] = []
  private failure?: Error
  private readonly connected: Promise<void>

  constructor(socketPath: string) {
    this.conn = net.createConnection(socketPath)
    this.connected = new Promise((resolve, reject) => {
      this.conn.once('connect', resolve)
      this.conn.once('error', reject)
    })
    this.connected.catch(() => undefined)
    this.conn.on('data', (chunk: Buffer) => {
      try {
        for (const { header, payload } of this.reader.push(chunk)) this.waiting.shift()?.resolve({ res: header as ControlResponse, payload })
      } catch (err) {
        this.fail(err as Error)
      }
    })
    this.conn.on('error', (err) => this.fail(err))
    this.conn.on('close', () => this.fail(new ControlError('the mount daemon closed the control connection')))
  }

  /** Sends one request (with optional bytes) and waits for its answer; a daemon-side error rejects with ControlError. */
  async request(req: ControlRequest, payload?: Buffer, timeoutMs = 120_000): Promise<{ fields: Record<string, unknown>; payload: Buffer }> {
    await this.connected
    if (this.failure) throw this.failure
    const answer = new Promise<{ res: ControlResponse; payload: Buffer }>((resolve, reject) => this.waiting.push({ resolve, reject }))
    for (const p of frame(req, payload)) this.conn.write(p)
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        this.fail(new ControlError(`the mount daemon did not answer within ${Math.round(timeoutMs / 1000)} s`))
        reject(this.failure)
      }, timeoutMs)
    })
    try {
      const { res, payload: bytes } = await Promise.race([answer, timeout])
      if (!res.ok) throw new ControlError(res.error, res.code, res.exitCode)
      return { fields: res, payload: bytes }
    } finally {
      clearTimeout(timer)
    }
  }

  close(): void {
    this.conn.end()
  }

  private fail(err: Error): void {
    this.failure ??= err
    for (const w of this.waiting.splice(0)) w.reject(this.failure)
    this.conn.destroy()
  }
}

/** Sends one request on a fresh connection and waits for its response. */
export async function controlRequest(socketPath: string, req: ControlRequest, timeoutMs = 120_000): Promise<Record<string, unknown>> {
  const client = new ControlClient(socketPath)
  try {
    return (await client.request(req, undefined, timeoutMs)).fields
  } finally {
    client.close()
  }
}
