import { randomBytes } from 'node:crypto'
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { BIN, runCli, type CliResult } from '../helpers/cli.js'
import { fileBackend, mountVolume, mustSh, s3Backend, sh, useBackend, withKeyFile, type Backend } from '../helpers/mount.js'
import { s3Servers } from '../helpers/stores.js'

/**
 * Volume management and file access without a mount, through the real CLI:
 * snapshot, fork, restore, diff, ls/stat/cat/rm/mv/mkdir/put/get — on
 * file:// and on the local S3 server (s3rver), and on a volume that is
 * mounted and being written at the same time.
 */

const backends: [string, () => Promise<Backend>][] = [['file://', () => withKeyFile(fileBackend)]]
const s3rver = s3Servers().find((s) => s.name === 's3rver')
if (s3rver) backends.push(['s3rver', () => withKeyFile(() => s3Backend(s3rver))])

for (const [label, make] of backends) {
  describe(`volume commands on ${label}`, () => {
    const ctx = useBackend(make)
    const s0fs = (args: string[], input?: string | Buffer) => runCli([...args, '--repo', ctx.backend.repo!], { env: ctx.backend.env, input, timeoutMs: 120_000 })
    const ok = async (args: string[], input?: string | Buffer) => {
      const r = await s0fs(args, input)
      if (r.code !== 0) throw new Error(`s0fs ${args.join(' ')} exited ${r.code}: ${r.stderr}`)
      return r
    }

    it('snapshot is unchanged by later writes; diff names exactly the changes', async () => {
      await ok(['volume', 'create', 'work'])
      await ok(['put', '-', 'work:/keep.txt'], 'kept\n')
      await ok(['put', '-', 'work:/edit.txt'], 'version 1\n')
      await ok(['put', '-', 'work:/gone.txt'], 'to be removed\n')
      await ok(['mkdir', '-p', 'work:/dir/sub'])
      await ok(['snapshot', 'create', 'work', 'snap1'])

      await ok(['put', '-', 'work:/edit.txt'], 'version 2\n')
      await ok(['rm', 'work:/gone.txt'])
      await ok(['put', '-', 'work:/dir/sub/new.txt'], 'new\n')
      await ok(['mv', 'work:/keep.txt', 'work:/dir/'])

      expect((await ok(['cat', 'snap1:/edit.txt'])).stdout).toBe('version 1\n')
      expect((await ok(['cat', 'snap1:/gone.txt'])).stdout).toBe('to be removed\n')
      expect((await ok(['ls', 'snap1:/'])).stdout).toBe('dir\nedit.txt\ngone.txt\nkeep.txt\n')
      expect((await ok(['cat', 'work:/edit.txt'])).stdout).toBe('version 2\n')
      expect((await ok(['ls', 'work:/dir'])).stdout).toBe('keep.txt\nsub\n')

      const text = (await ok(['diff', 'snap1', 'work'])).stdout
      expect(text).toBe(['A\t/dir/keep.txt', 'A\t/dir/sub/new.txt', 'M\t/edit.txt', 'D\t/gone.txt', 'D\t/keep.txt', ''].join('\n'))
      const diff = JSON.parse((await ok(['diff', '--json', 'snap1', 'work'])).stdout)
      expect(diff.added.map((e: { path: string }) => e.path)).toEqual(['/dir/keep.txt', '/dir/sub/new.txt'])
      expect(diff.removed.map((e: { path: string }) => e.path)).toEqual(['/gone.txt', '/keep.txt'])
      expect(diff.modified).toEqual([{ path: '/edit.txt', type: 'file' }])

      const snaps = JSON.parse((await ok(['snapshot', 'list', '--json', 'work'])).stdout)
      expect(snaps.map((s: { name: string }) => s.name)).toEqual(['snap1'])
      // Snapshots are read-only, with a hint.
      const w = await s0fs(['put', '-', 'snap1:/x'], 'x')
      expect(w.code).toBe(1)
      expect(w.stderr).toMatch(/snapshot.*read-only.*fork/)
    }, 180_000)

    it('fork: both sides change independently, and shared data is stored once', async () => {
      await ok(['volume', 'create', 'base'])
      const big = randomBytes(6 * 1024 * 1024)
      await ok(['put', '-', 'base:/big.bin'], big)
      const before = await segmentBytes(ok)
      await ok(['fork', 'base', 'child'])
      await ok(['put', '-', 'child:/only-child.txt'], 'child\n')
      await ok(['put', '-', 'base:/only-base.txt'], 'base\n')
      await ok(['rm', 'child:/big.bin'])

      expect((await ok(['ls', 'base:/'])).stdout).toBe('big.bin\nonly-base.txt\n')
      expect((await ok(['ls', 'child:/'])).stdout).toBe('only-child.txt\n')
      // The fork copied no data: the bucket grew by the two small files' segments at most.
      expect((await segmentBytes(ok)) - before).toBeLessThan(256 * 1024)
      // A fork of a fork of a snapshot, and the source's deletion: the fork keeps working.
      await ok(['snapshot', 'create', 'base', 'base-s'])
      await ok(['fork', 'base-s', 'grandchild'])
      await ok(['volume', 'delete', 'base'])
      await ok(['snapshot', 'delete', 'base-s'])
      const got = await s0fs(['cat', 'grandchild:/big.bin'])
      expect(got.code).toBe(0)
      expect(Buffer.from(got.stdout, 'latin1').length).toBeGreaterThan(0)
      const roundTrip = path.join(ctx.backend.home, 'big.out')
      await ok(['get', 'grandchild:/big.bin', roundTrip])
      expect(readFileSync(roundTrip).equals(big)).toBe(true)
      const info = JSON.parse((await ok(['volume', 'info', '--json', 'grandchild'])).stdout)
      expect(info.origin).toMatchObject({ kind: 'snapshot', name: 'base-s' })
      expect((await s0fs(['volume', 'info', 'base'])).code).toBe(3)
    }, 180_000)

    it('restore brings back the snapshot\'s exact tree (put/get of a real directory)', async () => {
      const src = path.join(ctx.backend.home, 'src-tree')
      mkdirSync(path.join(src, 'a/b'), { recursive: true })
      writeFileSync(path.join(src, 'a/b/data.bin'), randomBytes(300_000))
      writeFileSync(path.join(src, 'a/script.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 })
      writeFileSync(path.join(src, 'empty'), '')
      symlinkSync('a/script.sh', path.join(src, 'link'))
      await mustSh(`touch -d '2020-01-02 03:04:05' ${src}/a/b/data.bin && chmod 600 ${src}/empty`)

      await ok(['volume', 'create', 'rest'])
      await ok(['put', src, 'rest:/'])
      await ok(['snapshot', 'create', 'rest', 'rest-s'])
      await ok(['rm', '-r', 'rest:/src-tree/a'])
      await ok(['put', '-', 'rest:/src-tree/extra'], 'extra')
      await ok(['restore', 'rest', 'rest-s'])

      const out = path.join(ctx.backend.home, 'restored')
      await ok(['get', 'rest:/src-tree', out])
      await mustSh(`diff -r --no-dereference ${src} ${out}`)
      expect(statSync(path.join(out, 'a/script.sh')).mode & 0o777).toBe(0o755)
      expect(statSync(path.join(out, 'empty')).mode & 0o777).toBe(0o600)
      expect(statSync(path.join(out, 'a/b/data.bin')).mtimeMs).toBe(statSync(path.join(src, 'a/b/data.bin')).mtimeMs)
      expect((await ok(['diff', 'rest-s', 'rest'])).stdout).toBe('')
      const st = JSON.parse((await ok(['stat', '--json', 'rest:/src-tree/link'])).stdout)
      expect(st).toMatchObject({ type: 'symlink', target: 'a/script.sh' })
      const ls = (await ok(['ls', '-l', 'rest:/src-tree/a'])).stdout
      expect(ls).toMatch(/^-rwxr-xr-x +1 .* script\.sh$/m)
    }, 180_000)

    it('bad input: clear errors, documented exit codes, nothing changed', async () => {
      await ok(['volume', 'create', 'strict'])
      await ok(['put', '-', 'strict:/f'], 'content')
      const cases: [string[], number, RegExp][] = [
        [['cat', 'strict:/../../etc/passwd'], 2, /escapes the volume root/],
        [['cat', 'strict:/nope'], 3, /\/nope: No such file or directory/],
        [['cat', 'nosuch:/f'], 3, /no volume or snapshot named "nosuch"/],
        [['cat', 'strict/f'], 2, /not VOLUME:PATH/],
        [['put', '-', `strict:/${'n'.repeat(256)}`], 2, /File name too long|limit is 255/],
        [['mkdir', 'strict:/f'], 4, /File exists/],
        [['rm', 'strict:/'], 2, /root/],
        [['mv', 'strict:/f', 'other:/f'], 1, /between volumes/],
        [['volume', 'create', 'bad name'], 2, /invalid volume name/],
        [['volume', 'create', 'strict'], 4, /already exists/],
        [['restore', 'strict', 'no-snap'], 3, /no-snap/],
        [['fork', 'missing', 'x'], 3, /missing/],
        [['volume', 'frobnicate'], 2, /unknown subcommand/],
      ]
      for (const [args, code, message] of cases) {
        const r = await s0fs(args, '')
        expect({ args, code: r.code }).toEqual({ args, code })
        expect(r.stderr).toMatch(message)
      }
      expect((await ok(['cat', 'strict:/f'])).stdout).toBe('content')
      expect((await ok(['ls', 'strict:/'])).stdout).toBe('f\n')
    }, 180_000)

    it('a mounted volume: snapshot/fork while writing, and CLI changes show in the mount at once', async () => {
      const m = ctx.track(await mountVolume(ctx.backend, { volume: 'live' }))
      // A writer that keeps going while the commands run.
      const writer = sh(`for i in $(seq 1 200); do echo line-$i > ${m.mountpoint}/w-$i; done`, { timeoutMs: 120_000 })
      await mustSh(`echo before > ${m.mountpoint}/marker`)
      const snap = JSON.parse((await ok(['snapshot', 'create', '--json', 'live', 'live-s'])).stdout)
      expect(snap.volume).toBe('live')
      // Through the daemon, a bad or taken name exits as it does without a mount.
      expect((await s0fs(['snapshot', 'create', 'live', 'live-s'])).code).toBe(4)
      expect((await s0fs(['snapshot', 'create', 'live', '.bad'])).code).toBe(2)
      await ok(['fork', 'live', 'live-fork'])
      expect((await writer).code).toBe(0)
      // Everything written before each command is in it, without unmounting.
      expect((await ok(['cat', 'live-s:/marker'])).stdout).toBe('before\n')
      expect((await ok(['cat', 'live-fork:/marker'])).stdout).toBe('before\n')

      // Writes through the daemon: the kernel's cached (negative) entries are dropped.
      expect(existsSync(path.join(m.mountpoint, 'from-cli.txt'))).toBe(false)
      await ok(['put', '-', 'live:/from-cli.txt'], 'via control socket\n')
      expect(readFileSync(path.join(m.mountpoint, 'from-cli.txt'), 'utf8')).toBe('via control socket\n')
      await ok(['put', '-', 'live:/marker'], 'after\n')
      expect(readFileSync(path.join(m.mountpoint, 'marker'), 'utf8')).toBe('after\n')
      await ok(['mv', 'live:/marker', 'live:/moved'])
      expect(existsSync(path.join(m.mountpoint, 'marker'))).toBe(false)
      expect(readFileSync(path.join(m.mountpoint, 'moved'), 'utf8')).toBe('after\n')
      await ok(['rm', 'live:/w-1'])
      expect(existsSync(path.join(m.mountpoint, 'w-1'))).toBe(false)

      // A tree put through the daemon arrives whole (small files and multi-MiB ones), and a
      // listing the kernel had cached before shows it.
      const tree = path.join(ctx.backend.home, 'put-tree')
      mkdirSync(path.join(tree, 'sub'), { recursive: true })
      for (let i = 0; i < 60; i++) writeFileSync(path.join(tree, i % 3 ? `f${i}` : `sub/f${i}`), randomBytes((i * 7919) % 70_000))
      for (let i = 0; i < 3; i++) writeFileSync(path.join(tree, `big${i}`), randomBytes(3 * 1024 * 1024 + i))
      expect(readdirSync(m.mountpoint)).not.toContain('put-tree')
      await ok(['put', tree, 'live:/'])
      expect(readdirSync(m.mountpoint)).toContain('put-tree')
      await mustSh(`diff -r ${tree} ${m.mountpoint}/put-tree`)
      expect((await ok(['cat', 'live:/w-200'])).stdout).toBe('line-200\n')

      // The daemon holds the lease: restore and delete are refused, naming it.
      for (const args of [['restore', 'live', 'live-s'], ['volume', 'delete', 'live']]) {
        const r = await s0fs(args)
        expect(r.code).toBe(7)
        expect(r.stderr).toMatch(/mount at/)
      }
      await m.umount()
      // After unmount, the CLI takes the lease itself.
      expect((await ok(['cat', 'live:/moved'])).stdout).toBe('after\n')
      await ok(['restore', 'live', 'live-s'])
      expect((await ok(['cat', 'live:/marker'])).stdout).toBe('before\n')
    }, 240_000)

    it('volume list and info speak JSON', async () => {
      const list = JSON.parse((await ok(['volume', 'list', '--json'])).stdout) as { name: string; generation: number }[]
      expect(list.map((v) => v.name)).toContain('work')
      const info = JSON.parse((await ok(['volume', 'info', '--json', 'work'])).stdout)
      expect(info).toMatchObject({ name: 'work', snapshots: [{ name: 'snap1', volume: 'work' }] })
      expect(info.generation).toBeGreaterThan(1)
    }, 60_000)
  })
}

async function segmentBytes(ok: (args: string[]) => Promise<CliResult>): Promise<number> {
  const info = JSON.parse((await ok(['repo', 'info', '--json'])).stdout)
  return Object.entries(info.byPrefix as Record<string, { bytes: number }>)
    .filter(([p]) => p.startsWith('seg'))
    .reduce((n, [, v]) => n + v.bytes, 0)
}

describe('put, get, mv and rm behave like cp, mv and rm (a mounted volume on file://)', () => {
  const ctx = useBackend(() => withKeyFile(fileBackend))
  const s0fs = (args: string[], input?: string | Buffer) => runCli([...args, '--repo', ctx.backend.repo!], { env: ctx.backend.env, input, timeoutMs: 120_000 })
  const ok = async (args: string[], input?: string | Buffer) => {
    const r = await s0fs(args, input)
    if (r.code !== 0) throw new Error(`s0fs ${args.join(' ')} exited ${r.code}: ${r.stderr}`)
    return r
  }

  it('refuses to copy a file onto itself or a directory into itself, and keeps modes, times and links right', async () => {
    await ok(['volume', 'create', 'cp'])
    const m = ctx.track(await mountVolume(ctx.backend, { volume: 'cp' }))
    const local = path.join(ctx.backend.home, 'cp-local')
    mkdirSync(local, { recursive: true })
    const data = randomBytes(5 * 1024 * 1024)
    writeFileSync(path.join(local, 'data.bin'), data)
    await ok(['put', path.join(local, 'data.bin'), 'cp:/data.bin'])

    // The same file through the mount: refused, and nothing is truncated.
    const onMount = path.join(m.mountpoint, 'data.bin')
    for (const args of [['put', onMount, 'cp:/data.bin'], ['get', 'cp:/data.bin', onMount], ['put', m.mountpoint, 'cp:/'], ['get', 'cp:/', path.join(m.mountpoint, 'inside')]]) {
      const r = await s0fs(args)
      expect(r.code, args.join(' ')).toBe(2)
      expect(r.stderr).toMatch(/are the same file|into itself/)
    }
    expect(readFileSync(onMount).equals(data)).toBe(true)

    // Times before 1970 (with a fraction) and just under a second survive both ways; the listing still works.
    writeFileSync(path.join(local, 'old'), 'old')
    await mustSh(`touch -d '1969-12-31 23:59:58.500' ${local}/old && touch -d '2020-01-01 00:00:00.9996' ${local}/data.bin`)
    await ok(['put', path.join(local, 'old'), 'cp:/old'])
    await ok(['put', path.join(local, 'data.bin'), 'cp:/data.bin'])
    expect(JSON.parse((await ok(['stat', '--json', 'cp:/old'])).stdout).mtime).toBe('1969-12-31T23:59:58.500Z')
    expect(statSync(path.join(m.mountpoint, 'old')).mtimeMs).toBe(-1500)
    expect(statSync(onMount).mtime.toISOString()).toBe('2020-01-01T00:00:00.999Z')
    await mustSh(`mkdir ${m.mountpoint}/pre && touch -d '1960-01-01 00:00:00' ${m.mountpoint}/pre/x`)
    expect(JSON.parse((await ok(['stat', '--json', 'cp:/pre/x'])).stdout).mtime).toBe('1960-01-01T00:00:00.000Z')
    expect(readdirSync(m.mountpoint)).toContain('old')

    // A put over an existing file gives it the source's mode.
    await mustSh(`chmod 600 ${local}/data.bin`)
    await ok(['put', path.join(local, 'data.bin'), 'cp:/data.bin'])
    expect(statSync(onMount).mode & 0o777).toBe(0o600)

    // A symlink to a directory is a directory to copy into (and to move into); a symlink inside the
    // destination is not written through.
    await mustSh(`mkdir ${m.mountpoint}/real && ln -s real ${m.mountpoint}/link && mkdir -p ${local}/tree/x && echo t > ${local}/tree/x/f`)
    await ok(['put', path.join(local, 'old'), 'cp:/link'])
    await ok(['mv', 'cp:/old', 'cp:/link'])
    expect(readdirSync(path.join(m.mountpoint, 'real')).sort()).toEqual(['old'])
    await mustSh(`mkdir ${m.mountpoint}/tree && ln -s /real ${m.mountpoint}/tree/x`)
    const through = await s0fs(['put', path.join(local, 'tree'), 'cp:/'])
    expect(through.code).toBe(4)
    expect(through.stderr).toMatch(/cannot overwrite non-directory cp:\/tree\/x with directory/)
    expect(readdirSync(path.join(m.mountpoint, 'real'))).toEqual(['old'])

    // get: a symlink's file comes out with the file's mode and time; a directory with its own.
    await mustSh(`ln -s data.bin ${m.mountpoint}/data.link && mkdir -m 700 ${m.mountpoint}/priv && touch -d 2010-01-01 ${m.mountpoint}/priv`)
    await ok(['get', 'cp:/data.link', path.join(local, 'got.bin')])
    expect(statSync(path.join(local, 'got.bin')).mode & 0o777).toBe(0o600)
    expect(statSync(path.join(local, 'got.bin')).mtime.toISOString()).toBe('2020-01-01T00:00:00.999Z')
    await ok(['get', 'cp:/priv', path.join(local, 'priv')])
    expect(statSync(path.join(local, 'priv')).mode & 0o777).toBe(0o700)
    expect(statSync(path.join(local, 'priv')).mtime.toISOString()).toBe('2010-01-01T00:00:00.000Z')

    // mv over one of two hard links: the other name shows one link at once.
    await mustSh(`cd ${m.mountpoint} && echo y > k3 && ln k3 k4 && echo z > k1 && stat -c %h k4 >/dev/null`)
    await ok(['mv', 'cp:/k1', 'cp:/k3'])
    expect(statSync(path.join(m.mountpoint, 'k4')).nlink).toBe(1)

    // rm: a directory needs -r; every path is tried; ls -l shows setuid, setgid and sticky bits.
    const rmDir = await s0fs(['rm', 'cp:/priv'])
    expect(rmDir.code).toBe(1)
    expect(rmDir.stderr).toMatch(/is a directory \(use -r\)/)
    const rmMany = await s0fs(['rm', 'cp:/k3', 'cp:/missing', 'cp:/k4'])
    expect(rmMany.code).toBe(3)
    expect(existsSync(path.join(m.mountpoint, 'k4'))).toBe(false)
    await mustSh(`cd ${m.mountpoint} && touch su && chmod 6711 su && mkdir -m 1777 tmp`)
    const long = (await ok(['ls', '-l', 'cp:/'])).stdout
    expect(long).toMatch(/^-rws--s--x .* su$/m)
    expect(long).toMatch(/^drwxrwxrwt .* tmp$/m)

    // Names that are not UTF-8 (fine through the mount) are skipped by get and put, which say so and exit 1;
    // rm -r removes them.
    await mustSh(`mkdir ${m.mountpoint}/bytes && echo ok > ${m.mountpoint}/bytes/good && echo b > ${m.mountpoint}/bytes/$'\\xfe' && mkdir -p ${local}/bytes && echo c > ${local}/bytes/$'\\xe9t\\xe9' && echo ok > ${local}/bytes/fine`)
    const got = await s0fs(['get', 'cp:/bytes', path.join(local, 'bytes-out')])
    expect(got.code).toBe(1)
    expect(got.stderr).toMatch(/skipped \/bytes\/.*not valid UTF-8[\s\S]*1 entry was not copied/)
    expect(readdirSync(path.join(local, 'bytes-out'))).toEqual(['good'])
    const put = await s0fs(['put', path.join(local, 'bytes'), 'cp:/bytes-in'])
    expect(put.code).toBe(1)
    expect(readdirSync(path.join(m.mountpoint, 'bytes-in'))).toEqual(['fine'])
    await ok(['rm', '-r', 'cp:/bytes'])
    expect(existsSync(path.join(m.mountpoint, 'bytes'))).toBe(false)

    // A directory whose listing is larger than one control message (names of 200 bytes and more) lists whole.
    await mustSh(`python3 -c "import os; d='${m.mountpoint}/wide'; os.mkdir(d); [open(f'{d}/{i:05d}' + 'n' * 200, 'w').close() for i in range(6000)]"`)
    const wide = (await ok(['ls', 'cp:/wide'])).stdout.split('\n').filter(Boolean)
    expect(wide.length).toBe(6000)
    expect(new Set(wide).size).toBe(6000)

    // cat into a reader that stops early ends quietly.
    const piped = await sh(`node ${BIN} cat --repo '${ctx.backend.repo}' cp:/data.bin | head -c 10 | wc -c; echo "status \${PIPESTATUS[0]}"`, { env: ctx.backend.env })
    expect(piped.stdout).toBe('10\nstatus 0\n')
    expect(piped.stderr).toBe('')
    // So does any command whose output is cut short (a long listing here).
    const listed = await sh(`node ${BIN} ls -l --repo '${ctx.backend.repo}' cp:/wide | head -n 1 >/dev/null; echo "status \${PIPESTATUS[0]}"`, { env: ctx.backend.env })
    expect(listed.stdout).toBe('status 0\n')
    expect(listed.stderr).toBe('')
    await m.umount()
  }, 180_000)
})
