import { readFileSync } from 'node:fs'

/**
 * Whether a process on this host is alive. A zombie is dead: a daemon killed
 * with SIGKILL after its parent exited stays "defunct" until init reaps it,
 * and kill(pid, 0) still succeeds on it.
 */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Field 3, after the parenthesised command name (which may itself contain spaces or parens).
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
    return state !== 'Z' && state !== 'X'
  } catch {
    return true // no /proc: trust kill(0)
  }
}

/** This process's peak resident set so far (the kernel's high-water mark), or the current RSS without /proc. */
export function peakRssBytes(): number {
  try {
    const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))
    if (match) return Number(match[1]) * 1024
  } catch {
    // no /proc
  }
  return process.memoryUsage.rss()
}
