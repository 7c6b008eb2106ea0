import { spawn } from 'node:child_process'
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { sleep } from '../../src/store/index.js'
import { checkSurvivors } from '../helpers/crash.js'
import { fileBackend, mountVolume, mustSh, type Backend, type Mounted } from '../helpers/mount.js'

const WRITER = path.join(import.meta.dirname, '../fixtures/crash-writer.py')

/**
 * kill -9 of the mount daemon in the middle of writes: the next mount must
 * show every byte and rename that had been fsynced, and no torn file.
 */
describe('crash: kill -9 of the daemon during writes', () => {
  let backend: Backend
  let m: Mounted | undefined

  beforeAll(async () => {
    backend = await fileBackend()
  })

  afterAll(async () => {
    await m?.teardown()
    backend?.cleanup()
  }, 120_000)

  for (const trial of [1, 2, 3]) {
    it(`trial ${trial}: everything fsynced survives`, async () => {
      m = await mountVolume(backend)
      const dir = path.join(m.mountpoint, `trial-${trial}`)
      const log = path.join(backend.home, `trial-${trial}.log`)
      writeFileSync(log, '')
      const writer = spawn('python3', [WRITER, dir, log, String(trial * 7919), '30'], { stdio: ['ignore', 'pipe', 'pipe'] })
      const exited = new Promise<void>((resolve) => writer.on('close', () => resolve()))
      await sleep(1500 + trial * 700)
      m.kill()
      await exited
      const logText = readFileSync(log, 'utf8')
      expect(logText.split('\n').filter((l) => l.startsWith('sync')).length).toBeGreaterThan(3)
      // The next mount of the same mountpoint cleans up the dead mount and replays the log.
      m = await mountVolume(backend, { mountpoint: m.mountpoint })
      expect(checkSurvivors(dir, logText)).toEqual([])
      await m.umount()
      m = undefined
    }, 120_000)
  }

  it('leaves no readable plaintext in the bucket or the portal', async () => {
    m = await mountVolume(backend, { volume: 'agent-workspace-alpha' })
    const secretName = 'quarterly-report-confidential-7c1f.txt'
    const secretText = 'The launch code is swordfish-4242, keep this out of the bucket please. '.repeat(200)
    writeFileSync(path.join(m.mountpoint, secretName), secretText)
    await mustSh(`mkdir -p ${m.mountpoint}/src && cp -a ${path.join(import.meta.dirname, '../../src/store')} ${m.mountpoint}/src/`)
    await mustSh(`sync -f ${m.mountpoint}`)
    await m.umount()
    m = undefined
    const needles = [secretName, 'swordfish-4242', 'launch code is', 'putIfAbsent(key', 'agent-workspace-alpha', 'trial-1'].map((s) => Buffer.from(s))
    const scanned = { files: 0, bytes: 0 }
    const scan = (root: string) => {
      for (const name of readdirSync(root)) {
        const file = path.join(root, name)
        const st = statSync(file)
        if (st.isDirectory()) {
          scan(file)
          continue
        }
        // The config is plaintext by design (format, KDF parameters, wrapped keys); it names no volume.
        if (name === 'config') continue
        const data = readFileSync(file)
        scanned.files++
        scanned.bytes += data.length
        for (const n of needles) expect(data.includes(n), `${n.toString()} found in ${file}`).toBe(false)
        for (const n of needles) expect(file.includes(n.toString()), `${n.toString()} in the path ${file}`).toBe(false)
      }
    }
    scan(new URL(backend.repo!).pathname)
    scan(path.join(backend.home, 'portal'))
    expect(scanned.files).toBeGreaterThan(5)
    expect(scanned.bytes).toBeGreaterThan(20_000)
  }, 120_000)
})
