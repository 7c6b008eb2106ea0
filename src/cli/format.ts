import { UsageError } from './exit-codes.js'
/** Human-readable sizes (binary units), durations and tables for CLI output. */

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB']
  let value = n
  let unit = 0
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  return unit === 0 ? `${n} B` : `${value.toFixed(value < 10 ? 2 : value < 100 ? 1 : 0)} ${units[unit]}`
}

/** Parses "10G", "512MiB", "1.5 GB", "4096" into bytes (binary multiples). */
export function parseBytes(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b?)\s*$/i.exec(text)
  if (!m) throw new Error(`invalid size ${JSON.stringify(text)}: expected a number with an optional K, M, G, T suffix`)
  const power = ' kmgtp'.indexOf(m[2].toLowerCase() || ' ')
  return Math.round(Number(m[1]) * 1024 ** power)
}

export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`
  const s = Math.round(ms / 1000)
  return s < 3600 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`
}

/** Left-aligned columns separated by two spaces; numbers right-aligned. */
export function table(headers: string[], rows: (string | number)[][]): string {
  const cells = [headers, ...rows.map((r) => r.map(String))]
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)))
  const numeric = headers.map((_, i) => rows.length > 0 && rows.every((r) => typeof r[i] === 'number'))
  return (
    cells
      .map((r) => r.map((c, i) => (numeric[i] ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join('  ').trimEnd())
      .join('\n') + '\n'
  )
}

/** "HOST:PORT" ("[::1]:PORT" for IPv6) for --listen and --metrics. */
export function parseHostPort(text: string, option: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-f:]+)\]|([^:]+)):(\d{1,5})$/i.exec(text)
  const port = m ? Number(m[3]) : NaN
  if (!m || port > 65535) throw new UsageError(`${option} must be HOST:PORT (e.g. 127.0.0.1:9100), got ${JSON.stringify(text)}`)
  return { host: m[1] ?? m[2], port }
}
