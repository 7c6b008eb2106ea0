import { readFileSync } from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { cliReference } from '../../src/cli/reference.js'
import { COMMANDS } from '../../src/cli/main.js'

describe('CLI reference', () => {
  it('docs/cli.md is the current --help text of every command (regenerate with npm run docs)', () => {
    const doc = readFileSync(path.join(import.meta.dirname, '../../docs/cli.md'), 'utf8')
    expect(doc).toBe(cliReference())
    for (const c of COMMANDS) expect(doc).toContain(`## s0fs ${c.path.join(' ')}`)
  })
})
