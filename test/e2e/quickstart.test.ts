import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { homedir, tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { forceUnmount, mustSh, sh } from '../helpers/mount.js'

/**
 * The README's quick start, verbatim, on a copy of this checkout and a fresh
 * HOME: the first command installs and mounts the embedded default volume,
 * which must then work like a disk. (The second command is the test suite
 * itself.)
 */

const repoRoot = path.join(import.meta.dirname, '../..')

function quickStart(): string[] {
  const readme = readFileSync(path.join(repoRoot, 'README.md'), 'utf8')
  const section = readme.split('## Quick start')[1]
  const block = /```sh\n([\s\S]*?)```/.exec(section)?.[1]
  if (!block) throw new Error('README has no quick-start code block')
  return block.trim().split('\n')
}

describe('README quick start', () => {
  const work = mkdtempSync(path.join(tmpdir(), 's0fs-quickstart-'))
  const home = path.join(work, 'home')
  const clone = path.join(work, 's0fs')
  afterAll(async () => {
    await sh(`HOME=${home} node ${clone}/bin/s0fs.js umount ${home}/work`, { timeoutMs: 60_000 }).catch(() => undefined)
    forceUnmount(path.join(home, 'work'))
    rmSync(work, { recursive: true, force: true })
  }, 120_000)

  it('is exactly two commands: install-and-mount, then the tests', () => {
    const commands = quickStart()
    expect(commands).toHaveLength(2)
    expect(commands[0]).toMatch(/npm install/)
    expect(commands[0]).toMatch(/s0fs mount/)
    expect(commands[1]).toBe('npm test')
    expect(JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')).scripts.test).toBeTruthy()
  })

  it('installs and mounts the embedded default volume on a fresh HOME', async () => {
    // A copy of this checkout (tracked and new files, nothing built or installed).
    await mustSh(`mkdir -p ${clone} ${home} && cd ${repoRoot} && git ls-files -co --exclude-standard -z | xargs -0 tar -cf - | tar -xf - -C ${clone}`)
    expect(existsSync(path.join(clone, 'node_modules'))).toBe(false)
    const [install] = quickStart()
    const env = {
      HOME: home,
      XDG_RUNTIME_DIR: '',
      XDG_DATA_HOME: '',
      XDG_CACHE_HOME: '',
      // A fresh HOME, but the machine's npm cache: the registry may be slow or out of reach.
      npm_config_cache: process.env.npm_config_cache ?? path.join(homedir(), '.npm'),
      npm_config_prefer_offline: 'true',
    }
    const r = await sh(install, { cwd: clone, env, timeoutMs: 600_000 })
    expect(r.code, `${r.stderr}\n${r.stdout}`).toBe(0)
    const mountpoint = path.join(home, 'work')
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).toContain(` ${mountpoint} `)
    writeFileSync(path.join(mountpoint, 'hello.txt'), 'hello from the quick start\n')
    expect(readFileSync(path.join(mountpoint, 'hello.txt'), 'utf8')).toBe('hello from the quick start\n')
    const key = path.join(home, '.local/share/s0fs/key')
    expect(statSync(key).mode & 0o777).toBe(0o600)
    // Unmount and mount again: the file is in the embedded repository.
    await mustSh(`node ${clone}/bin/s0fs.js umount ${mountpoint}`, { env })
    await mustSh(`node ${clone}/bin/s0fs.js mount ${mountpoint}`, { env })
    expect(readFileSync(path.join(mountpoint, 'hello.txt'), 'utf8')).toBe('hello from the quick start\n')
  }, 900_000)
})
