/** What a crash trial must find after the remount: every fsynced byte and rename (see test/fixtures/crash-writer.py). */
import { createHash } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import path from 'node:path'

type State = Map<string, { sha: string; size: number }>

function apply(state: State, words: string[]): void {
  const [op, a, b, c] = words
  if (op === 'sync') state.set(a, { sha: b, size: Number(c) })
  else if (op === 'rename') {
    const v = state.get(a)
    state.delete(a)
    if (v) state.set(b, v)
  } else if (op === 'unlink') state.delete(a)
}

/**
 * The states the crash writer's log allows after a crash: everything it
 * completed (and made durable), without or with the one operation that was
 * in flight.
 */
export function allowedStates(logText: string): State[] {
  const done: State = new Map()
  let pending: string[] | undefined
  for (const line of logText.split('\n').filter(Boolean)) {
    const words = line.split(' ')
    if (words[0] === 'intent') pending = words.slice(1)
    else {
      apply(done, words)
      pending = undefined
    }
  }
  if (!pending) return [done]
  const withPending: State = new Map(done)
  apply(withPending, pending)
  return [done, withPending]
}

/** Problems with the promised files under `dir` against one allowed state (empty when it matches). */
export function checkState(dir: string, expected: State): string[] {
  const problems: string[] = []
  for (const [name, want] of expected) {
    const file = path.join(dir, name)
    if (!existsSync(file)) {
      problems.push(`missing: ${name}`)
      continue
    }
    const data = readFileSync(file)
    if (data.length !== want.size) problems.push(`${name}: size ${data.length}, fsynced ${want.size}`)
    else if (createHash('sha256').update(data).digest('hex') !== want.sha) problems.push(`${name}: content differs from what was fsynced`)
  }
  return problems
}

/** Empty when the directory matches one of the states the log allows; else the problems against the closest. */
export function checkSurvivors(dir: string, logText: string): string[] {
  const results = allowedStates(logText).map((s) => checkState(dir, s))
  if (results.some((r) => r.length === 0)) return []
  return results.reduce((a, b) => (a.length <= b.length ? a : b))
}
