import { chmodSync, existsSync, statSync } from 'node:fs'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { runCli } from '../helpers/cli.js'
import { s3Credentials, s3Servers, s3Url, tempDir } from '../helpers/stores.js'

const scratch = tempDir('s0fs-cli')
afterAll(() => scratch.cleanup())

describe('s0fs init / key / repo info', () => {
  it('creates a repository with a new key file, refuses to create it twice, and reports it', async () => {
    const repo = `file://${path.join(scratch.dir, 'r1')}`
    const key = path.join(scratch.dir, 'r1.key')
    const init = await runCli(['init', '--repo', repo, '--key-file', key])
    expect(init.code, init.stderr).toBe(0)
    expect(init.stderr).toMatch(/created key file .* \(mode 0600\)/)
    expect(statSync(key).mode & 0o777).toBe(0o600)
    const again = await runCli(['init', '--repo', repo, '--key-file', key])
    expect(again.code).toBe(4)
    expect(again.stderr).toMatch(/already exists.*nothing was changed/)
    const info = await runCli(['repo', 'info', '--repo', repo, '--key-file', key, '--json'])
    expect(info.code, info.stderr).toBe(0)
    const parsed = JSON.parse(info.stdout)
    expect(parsed).toMatchObject({ format: 's0fs-repository', version: 2, conditionalWrites: true, keySlots: 1, objects: 1 })
    const human = await runCli(['repo', 'info', '--repo', repo, '--key-file', key])
    expect(human.stdout).toMatch(/conditional\s+yes/)
    // An older format on request (for nodes running an older s0fs); a format it does not write is a usage error.
    const old = `file://${path.join(scratch.dir, 'r-format1')}`
    expect((await runCli(['init', '--repo', old, '--key-file', key, '--format', '1'])).code).toBe(0)
    expect(JSON.parse((await runCli(['repo', 'info', '--repo', old, '--key-file', key, '--json'])).stdout).version).toBe(1)
    const bad = await runCli(['init', '--repo', `file://${path.join(scratch.dir, 'r-format9')}`, '--key-file', key, '--format', '9'])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toMatch(/--format must be a repository format from 1 to 2/)
  })

  it('adds, lists and removes key slots without re-encrypting, and never removes the last', async () => {
    const repo = `file://${path.join(scratch.dir, 'r2')}`
    const env = { S0FS_PASSPHRASE: 'first passphrase' }
    expect((await runCli(['init', '--repo', repo], { env })).code).toBe(0)
    const second = path.join(scratch.dir, 'second.key')
    const add = await runCli(['key', 'add', '--repo', repo, '--new-key-file', second, '--json'], { env })
    expect(add.code, add.stderr).toBe(0)
    const slot = JSON.parse(add.stdout)
    expect(slot.kind).toBe('keyfile')
    const list = await runCli(['key', 'list', '--repo', repo, '--key-file', second, '--json'])
    const slots = JSON.parse(list.stdout) as { id: string; kind: string }[]
    expect(slots.map((s) => s.kind).sort()).toEqual(['keyfile', 'passphrase'])
    expect(list.stdout).not.toMatch(/wrapped|first passphrase/)
    const passphraseSlot = slots.find((s) => s.kind === 'passphrase')!.id
    expect((await runCli(['key', 'remove', passphraseSlot, '--repo', repo, '--key-file', second])).code).toBe(0)
    const old = await runCli(['repo', 'info', '--repo', repo], { env })
    expect(old.code).toBe(5)
    expect(old.stderr).toMatch(/no passphrase key slot/)
    const last = await runCli(['key', 'remove', slot.id, '--repo', repo, '--key-file', second])
    expect(last.code).not.toBe(0)
    expect(last.stderr).toMatch(/last one/)
  })

  it('gives one clear message and a distinct exit status for each kind of bad input', async () => {
    const repo = `file://${path.join(scratch.dir, 'r3')}`
    const env = { S0FS_PASSPHRASE: 'right' }
    expect((await runCli(['init', '--repo', repo], { env })).code).toBe(0)
    const cases: [string[], NodeJS.ProcessEnv, number, RegExp][] = [
      [['repo', 'info', '--repo', repo], { S0FS_PASSPHRASE: 'wrong' }, 5, /wrong passphrase/],
      [['repo', 'info', '--repo', `file://${path.join(scratch.dir, 'nothing-here')}`], env, 3, /no s0fs repository/],
      [['repo', 'info', '--repo', 'ftp://example.com/x'], env, 2, /unsupported repository URL/],
      [['repo', 'info', '--repo', 's3://Bad_Bucket!'], env, 2, /invalid/],
      [['repo', 'info', '--repo', 's3://bucket/x?endpoint=http://127.0.0.1:9&bogus=1'], env, 2, /unknown s3 URL parameter "bogus"/],
      [['repo', 'info', '--repo', 's3://bucket/x?endpoint=http://127.0.0.1:9'], { ...env, AWS_ACCESS_KEY_ID: 'a', AWS_SECRET_ACCESS_KEY: 'b' }, 6, /ECONNREFUSED|failed after/],
      [['repo', 'info', '--repo', repo, '--frobnicate'], env, 2, /Unknown option '--frobnicate'/],
      [['repo', 'infoo'], env, 2, /unknown subcommand "infoo"/],
      [['nonsense'], env, 2, /unknown command "nonsense"/],
      [['repo', 'info', '--repo', repo], {}, 2, /no key given/],
    ]
    for (const [args, caseEnv, code, message] of cases) {
      const r = await runCli(args, { env: caseEnv, timeoutMs: 30_000 })
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(code)
      expect(r.stderr).toMatch(message)
      expect(r.stderr.split('\n').filter(Boolean).length, r.stderr).toBeLessThanOrEqual(2)
    }
  })

  it('refuses a key file that group or others can read', async () => {
    const repo = `file://${path.join(scratch.dir, 'r4')}`
    const key = path.join(scratch.dir, 'r4.key')
    expect((await runCli(['init', '--repo', repo, '--key-file', key])).code).toBe(0)
    chmodSync(key, 0o640)
    const r = await runCli(['repo', 'info', '--repo', repo, '--key-file', key])
    expect(r.code).toBe(5)
    expect(r.stderr).toMatch(/chmod 600/)
  })

  it('prints help with the exit statuses, and --version', async () => {
    const help = await runCli(['--help'])
    expect(help.code).toBe(0)
    expect(help.stdout).toMatch(/Exit status:/)
    expect(help.stdout).toMatch(/repo info/)
    const sub = await runCli(['key', 'add', '--help'])
    expect(sub.stdout).toMatch(/--new-key-file FILE/)
    expect((await runCli(['--version'])).stdout).toMatch(/^s0fs \d+\.\d+\.\d+/)
    expect((await runCli([])).code).toBe(2)
  })

  for (const server of s3Servers()) {
    it(`initialises on ${server.name} and records conditional-write support`, async () => {
      const url = s3Url(server)
      const creds = s3Credentials(server)
      const env = { S0FS_PASSPHRASE: 'pw', AWS_ACCESS_KEY_ID: creds.accessKeyId, AWS_SECRET_ACCESS_KEY: creds.secretAccessKey }
      const init = await runCli(['init', '--repo', url, '--json'], { env })
      expect(init.code, init.stderr).toBe(0)
      expect(JSON.parse(init.stdout).conditionalWrites).toBe(server.conditionalWrites)
      const bad = await runCli(['repo', 'info', '--repo', url], { env: { ...env, AWS_SECRET_ACCESS_KEY: 'wrong-secret' } })
      if (server.name === 'ceph') {
        expect(bad.code).toBe(5)
        expect(bad.stderr).toMatch(/access denied/)
      }
      expect(existsSync(scratch.dir)).toBe(true)
    })
  }
})
