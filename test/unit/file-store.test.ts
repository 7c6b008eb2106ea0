import { execFile } from 'node:child_process'
import { readdirSync } from 'node:fs'
import path from 'node:path'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { FileStore } from '../../src/store/index.js'
import { tempDir } from '../helpers/stores.js'

const run = promisify(execFile)
const child = path.join(import.meta.dirname, '../fixtures/cas-incrementer.ts')

describe('file:// store across processes', () => {
  it('keeps compare-and-swap and put-if-absent atomic between 4 concurrent processes', async () => {
    const { dir, cleanup } = tempDir('s0fs-cas')
    try {
      const store = new FileStore(dir)
      await store.put('counter', Buffer.from('0'))
      const perProcess = 25
      const outputs = await Promise.all(
        [0, 1, 2, 3].map((i) => run(process.execPath, ['--import', 'tsx', child, dir, String(perProcess), String(i)], { timeout: 60_000 })),
      )
      const results = outputs.map((o) => JSON.parse(o.stdout) as { wonMarker: boolean; retries: number })
      expect((await store.get('counter')).toString()).toBe(String(4 * perProcess))
      expect(results.filter((r) => r.wonMarker)).toHaveLength(1)
      // Nothing is left behind: no temp files, no locks.
      expect(readdirSync(path.join(dir, '.tmp'))).toEqual([])
      expect(readdirSync(path.join(dir, '.locks'))).toEqual([])
    } finally {
      cleanup()
    }
  })

  it('breaks a lock left by a dead process', async () => {
    const { dir, cleanup } = tempDir('s0fs-lock')
    try {
      const store = new FileStore(dir)
      const { etag } = await store.put('ref', Buffer.from('a'))
      const { mkdirSync, writeFileSync } = await import('node:fs')
      mkdirSync(path.join(dir, '.locks'))
      // A pid that cannot exist on this host.
      writeFileSync(path.join(dir, '.locks', 'ref.lock'), JSON.stringify({ host: (await import('node:os')).hostname(), pid: 2 ** 22 + 7, at: Date.now() }))
      await store.putIfMatch('ref', Buffer.from('b'), etag)
      expect((await store.get('ref')).toString()).toBe('b')
    } finally {
      cleanup()
    }
  })
})
