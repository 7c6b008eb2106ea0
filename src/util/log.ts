/**
 * Structured logging with levels: plain lines for people, or JSON lines
 * (`--log-format json`) for log shippers. Callers never pass secrets; the
 * logger also refuses fields whose names look like secrets.
 */

export type Level = 'debug' | 'info' | 'warn' | 'error'
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 }
const SECRET = /pass|secret|key$|token|credential/i

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void
  info(msg: string, fields?: Record<string, unknown>): void
  warn(msg: string, fields?: Record<string, unknown>): void
  error(msg: string, fields?: Record<string, unknown>): void
}

export function createLogger(options: { level?: Level; format?: 'text' | 'json'; write?: (line: string) => void } = {}): Logger {
  const min = ORDER[options.level ?? 'info']
  const write = options.write ?? ((line: string) => process.stderr.write(line))
  const emit = (level: Level, msg: string, fields: Record<string, unknown> = {}) => {
    if (ORDER[level] < min) return
    const clean: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(fields)) clean[k] = SECRET.test(k) ? '[redacted]' : v instanceof Error ? v.message : v
    const time = new Date().toISOString()
    if (options.format === 'json') write(JSON.stringify({ time, level, msg, ...clean }) + '\n')
    else {
      const extra = Object.entries(clean)
        .map(([k, v]) => `${k}=${typeof v === 'string' && !/\s/.test(v) ? v : JSON.stringify(v)}`)
        .join(' ')
      write(`${time} ${level.padEnd(5)} ${msg}${extra ? ' ' + extra : ''}\n`)
    }
  }
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
  }
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} }
