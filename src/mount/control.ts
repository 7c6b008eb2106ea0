import { promises as fsp } from 'node:fs'
import net from 'node:net'
import path from 'node:path'

/**
 * The mount daemon's local control socket: newline-delimited JSON, one
 * request and one response per line. The socket file is mode 0600 in a 0700
 * directory, so only the daemon's user can talk to it.
 */

export type ControlRequest = { op: string; [key: string]: unknown }
export type ControlResponse = { ok: true; [key: string]: unknown } | { ok: false; error: string; code?: string; exitCode?: number }
export type ControlHandler = (req: ControlRequest) => Promise<Record<string, unknown>>

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

export async function serveControl(socketPath: string, handler: ControlHandler): Promise<net.Server> {
  await fsp.mkdir(path.dirname(socketPath), { recursive: true, mode: 0o700 })
  await fsp.rm(socketPath, { force: true })
  const server = net.createServer((conn) => {
    let buffered = ''
    conn.setEncoding('utf8')
    conn.on('data', (chunk: string) => {
      buffered += chunk
      let nl: number
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl)
        buffered = buffered.slice(nl + 1)
        void respond(line)
      }
      if (buffered.length > 16 * 1024 * 1024) conn.destroy()
    })
    conn.on('error', () => undefined)
    const respond = async (line: string) => {
      let response: ControlResponse
      try {
        const req = JSON.parse(line) as ControlRequest
        if (typeof req?.op !== 'string') throw new ControlError('request needs an "op"')
        response = { ok: true, ...(await handler(req)) }
      } catch (err) {
        const e = err as Error & { code?: string; exitCode?: number }
        response = { ok: false, error: e.message, code: e.code ?? e.name, exitCode: e.exitCode }
      }
      if (!conn.destroyed) conn.write(JSON.stringify(response) + '\n')
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

/** Sends one request and waits for its response. */
export function controlRequest(socketPath: string, req: ControlRequest, timeoutMs = 120_000): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const conn = net.createConnection(socketPath)
    let buffered = ''
    const timer = setTimeout(() => {
      conn.destroy()
      reject(new ControlError(`the mount daemon did not answer within ${Math.round(timeoutMs / 1000)} s`))
    }, timeoutMs)
    conn.setEncoding('utf8')
    conn.on('connect', () => conn.write(JSON.stringify(req) + '\n'))
    conn.on('data', (chunk: string) => {
      buffered += chunk
      const nl = buffered.indexOf('\n')
      if (nl < 0) return
      clearTimeout(timer)
      conn.end()
      const res = JSON.parse(buffered.slice(0, nl)) as ControlResponse
      if (res.ok) resolve(res)
      else reject(new ControlError(res.error, res.code, res.exitCode))
    })
    conn.on('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
  })
}
