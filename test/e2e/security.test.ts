import { spawn } from 'node:child_process'
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { BIN, runCli } from '../helpers/cli.js'
import { forceUnmount, mustSh, sh } from '../helpers/mount.js'

/**
 * What an attacker with the bucket, the portal disk or the logs learns:
 * after a realistic workload (mount, git-like tree, a secret file,
 * snapshot, fork, CLI copies, the HTTP API, all with --verbose), no object
 * and no portal file holds file contents, file or volume names, or key
 * material, and no log or output holds a secret. Key files are created
 * 0600 and refused when others can read them.
 */

const home = mkdtempSync(path.join(tmpdir(), 's0fs-security-'))
const repoDir = path.join(home, 'repo')
const repo = `file://${repoDir}`
const keyFile = path.join(home, 'volume.key')
const PASSPHRASE = 'correct horse battery staple 9f3e'
const TOKEN = 'api-token-5be1f0c2d7a94e8b'
const SECRET_TEXT = 'The vault combination is 31-41-59, do not leak it. '
const NAMES = ['project-zeta-secret-plans.md', 'payroll-2026', 'vol-acme-legal', 'snap-before-merger']

afterAll(() => {
  forceUnmount(path.join(home, 'mnt'))
  rmSync(home, { recursive: true, force: true })
})

function scanTree(root: string, needles: Buffer[], skip: (file: string) => boolean): { files: number; bytes: number; found: string[] } {
  const result = { files: 0, bytes: 0, found: [] as string[] }
  const visit = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const file = path.join(dir, name)
      for (const n of needles) if (file.includes(n.toString())) result.found.push(`${n} in the path ${file}`)
      const st = statSync(file)
      if (st.isDirectory()) {
        visit(file)
        continue
      }
      if (skip(file)) continue
      const data = readFileSync(file)
      result.files++
      result.bytes += data.length
      for (const n of needles) if (data.includes(n)) result.found.push(`${n.toString().slice(0, 40)} in ${file}`)
    }
  }
  visit(root)
  return result
}

describe('security', () => {
  it('a realistic workload leaves no content, name or key in the bucket, the portal or the logs', async () => {
    const env = { HOME: home, XDG_RUNTIME_DIR: '', S0FS_PASSPHRASE: PASSPHRASE }
    const outputs: string[] = []
    const cli = async (args: string[], input?: string) => {
      const r = await runCli([...args, '--repo', repo, '--verbose'], { env, input, timeoutMs: 120_000 })
      outputs.push(r.stdout, r.stderr)
      if (r.code !== 0) throw new Error(`s0fs ${args.join(' ')}: ${r.stderr}`)
      return r
    }
    await cli(['init'])
    await cli(['key', 'add', '--new-key-file', keyFile])
    expect(statSync(keyFile).mode & 0o777).toBe(0o600)
    await cli(['volume', 'create', NAMES[2]])
    const mnt = path.join(home, 'mnt')
    await cli(['mount', NAMES[2], mnt, '--cache-dir', path.join(home, 'portal'), '--log-level', 'debug'])
    await mustSh(
      [
        `mkdir -p ${mnt}/${NAMES[1]}/src`,
        `cp -a ${path.join(import.meta.dirname, '../../src/crypto')} ${mnt}/${NAMES[1]}/src/`,
        `for i in $(seq 1 50); do printf '${SECRET_TEXT}%s' $i > ${mnt}/${NAMES[1]}/note-$i.txt; done`,
        `printf '${SECRET_TEXT.repeat(100)}' > ${mnt}/${NAMES[0]}`,
        `sync -f ${mnt}/${NAMES[0]}`,
      ].join(' && '),
    )
    await cli(['snapshot', 'create', NAMES[2], NAMES[3]])
    await cli(['put', '-', `${NAMES[2]}:/from-cli-${NAMES[0]}`], SECRET_TEXT.repeat(20))
    await cli(['umount', mnt])
    await cli(['fork', NAMES[3], `${NAMES[2]}-fork`])
    await cli(['cat', `${NAMES[3]}:/${NAMES[0]}`])

    // The HTTP API, verbose, with the token on every request.
    writeFileSync(path.join(home, 'token'), TOKEN, { mode: 0o600 })
    const serve = spawn(process.execPath, [BIN, 'serve', '--repo', repo, '--listen', '127.0.0.1:0', '--token-file', path.join(home, 'token'), '--verbose'], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let serveLog = ''
    serve.stdout!.on('data', (d) => (serveLog += d))
    const url = await new Promise<string>((resolve) => serve.stderr!.on('data', (d) => {
      serveLog += d
      const m = /listening url=(\S+)/.exec(serveLog)
      if (m) resolve(m[1])
    }))
    const headers = { authorization: `Bearer ${TOKEN}` }
    expect((await fetch(`${url}/v1/volumes/${NAMES[2]}/files/${NAMES[0]}`, { headers })).status).toBe(200)
    expect((await fetch(`${url}/v1/volumes/${NAMES[2]}/files/api-${NAMES[0]}`, { method: 'PUT', headers, body: SECRET_TEXT })).status).toBe(200)
    expect((await fetch(`${url}/v1/volumes`, { headers: { authorization: 'Bearer wrong-guess' } })).status).toBe(401)
    serve.kill('SIGTERM')
    await new Promise((r) => serve.on('close', r))

    const key = readFileSync(keyFile)
    const needles = [
      ...NAMES.map((n) => Buffer.from(n)),
      Buffer.from(SECRET_TEXT.slice(0, 24)),
      Buffer.from('createKeyFile'), // source text copied into the volume
      Buffer.from(PASSPHRASE),
      key,
      Buffer.from(key.toString('base64')),
      Buffer.from(key.toString('hex')),
      Buffer.from(TOKEN),
    ]
    // The config is plaintext by design (format, KDF parameters, wrapped keys): it holds no name and no key.
    const bucket = scanTree(repoDir, needles, () => false)
    const portal = scanTree(path.join(home, 'portal'), needles, () => false)
    expect(bucket.found).toEqual([])
    expect(portal.found).toEqual([])
    expect(bucket.files).toBeGreaterThan(10)
    expect(bucket.bytes).toBeGreaterThan(20_000)

    // Logs and outputs: no secret, even with --verbose and debug logging (names may appear: they are the user's own).
    const logs = [...outputs, serveLog, ...readdirSync(path.join(home, '.cache/s0fs/run/mounts')).filter((f) => f.endsWith('.log')).map((f) => readFileSync(path.join(home, '.cache/s0fs/run/mounts', f), 'utf8'))].join('\n')
    expect(logs.length).toBeGreaterThan(200)
    for (const secret of [PASSPHRASE, TOKEN, key.toString('base64'), key.toString('hex')]) expect(logs.includes(secret), `found ${secret.slice(0, 8)}… in the logs`).toBe(false)
  }, 240_000)

  it('refuses key files and token files that others can read', async () => {
    const loose = path.join(home, 'loose.key')
    writeFileSync(loose, readFileSync(keyFile))
    chmodSync(loose, 0o640)
    const r = await runCli(['repo', 'info', '--repo', repo, '--key-file', loose], { env: { HOME: home } })
    expect(r.code).toBe(5)
    expect(r.stderr).toMatch(/loose\.key.*(readable|mode)/)
    const ok = await sh(`chmod 600 ${loose}`)
    expect(ok.code).toBe(0)
    expect((await runCli(['repo', 'info', '--repo', repo, '--key-file', loose], { env: { HOME: home } })).code).toBe(0)
  }, 60_000)
})
