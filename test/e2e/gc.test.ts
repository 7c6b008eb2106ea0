import { randomBytes } from 'node:crypto'
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { readKeyFile } from '../../src/crypto/index.js'
import { acquireLease } from '../../src/meta/index.js'
import { Repository } from '../../src/repo/index.js'
import { runCli } from '../helpers/cli.js'
import { fileBackend, mountVolume, mustSh, s3Backend, useBackend, withKeyFile, type Backend } from '../helpers/mount.js'
import { s3Servers } from '../helpers/stores.js'

/**
 * GC through the real CLI, on file:// and the local S3 server: it frees what
 * deleted snapshots and volumes held alone, keeps everything a fork or head
 * still needs (checked with fsck --read-data), and never deletes a segment a
 * live writer is deduplicating against.
 */

const backends: [string, () => Promise<Backend>][] = [['file://', () => withKeyFile(fileBackend)]]
const s3rver = s3Servers().find((s) => s.name === 's3rver')
if (s3rver) backends.push(['s3rver', () => withKeyFile(() => s3Backend(s3rver))])

for (const [label, make] of backends) {
  describe(`gc on ${label}`, () => {
    const ctx = useBackend(make)
    const s0fs = (args: string[], input?: Buffer | string) => runCli([...args, '--repo', ctx.backend.repo!], { env: ctx.backend.env, input, timeoutMs: 180_000 })
    const ok = async (args: string[], input?: Buffer | string) => {
      const r = await s0fs(args, input)
      if (r.code !== 0) throw new Error(`s0fs ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`)
      return r
    }
    const segBytes = async () => JSON.parse((await ok(['repo', 'info', '--json'])).stdout).byPrefix.seg?.bytes ?? 0
    const gc = async (...args: string[]) => JSON.parse((await ok(['gc', '--json', '--grace', '0', ...args])).stdout)

    it('frees what only deleted snapshots and volumes held; forks keep what they share', async () => {
      const unique = randomBytes(2 * 1024 * 1024)
      const shared = randomBytes(2 * 1024 * 1024)
      await ok(['volume', 'create', 'main'])
      await ok(['put', '-', 'main:/shared.bin'], shared)
      await ok(['put', '-', 'main:/unique.bin'], unique)
      await ok(['snapshot', 'create', 'main', 'before'])
      await ok(['fork', 'before', 'fork'])
      await ok(['rm', 'fork:/unique.bin'])
      await ok(['rm', 'main:/unique.bin'])

      // The default grace period (1 h) keeps everything this young; --dry-run changes nothing.
      const young = JSON.parse((await ok(['gc', '--json'])).stdout)
      expect(young.objectsFreed).toBe(0)
      const dry = await gc('--dry-run')
      expect(dry.segments.deleted).toBe(0) // the snapshot still holds unique.bin
      await ok(['snapshot', 'delete', 'before'])
      const planned = await gc('--dry-run')
      expect(planned.segments.deleted).toBeGreaterThan(0)
      const before = await segBytes()
      expect(await segBytes()).toBe(before)

      const done = await gc()
      expect(done.segments.deleted).toBe(planned.segments.deleted)
      expect(done.bytesFreed).toBeGreaterThanOrEqual(unique.length)
      expect(before - (await segBytes())).toBeGreaterThanOrEqual(unique.length)

      // Delete the volume the fork came from: the fork keeps the shared data.
      await ok(['volume', 'delete', 'main'])
      const second = await gc()
      expect(second.segments.deleted).toBe(0)
      const out = path.join(ctx.backend.home, 'shared.out')
      await ok(['get', 'fork:/shared.bin', out])
      expect(readFileSync(out).equals(shared)).toBe(true)
      const check = await s0fs(['fsck', '--read-data'])
      expect(check.code).toBe(0)
      expect(check.stdout).toMatch(/no damage found/)
      // Data written after a GC deduplicates correctly against what survived.
      await ok(['put', '-', 'fork:/again.bin'], shared)
      expect((await ok(['cat', 'fork:/again.bin'])).stdout.length).toBeGreaterThan(0)
    }, 300_000)

    it('repacks a mostly dead segment; a running mount and later reads follow the moved blobs', async () => {
      // Together under one segment's 4 MiB, the live part under half of it.
      const dead = randomBytes(2.5 * 1024 * 1024)
      const live = randomBytes(512 * 1024)
      const dir = path.join(ctx.backend.home, 'pair')
      mkdirSync(dir)
      writeFileSync(path.join(dir, 'dead.bin'), dead)
      writeFileSync(path.join(dir, 'live.bin'), live)
      await ok(['volume', 'create', 'sparse'])
      await ok(['put', dir, 'sparse:/']) // one commit: both files in one segment
      await ok(['rm', 'sparse:/pair/dead.bin'])
      await ok(['put', '-', 'sparse:/other.txt'], 'another segment')
      // A reader that has loaded the (empty) relocations before the repack: it must find the move itself.
      const m = ctx.track(await mountVolume(ctx.backend, { volume: 'sparse', args: ['--read-only'] }))
      expect(readFileSync(path.join(m.mountpoint, 'other.txt'), 'utf8')).toBe('another segment')
      const report = await gc('--repack-below', '0.5')
      expect(report.repacked).toMatchObject({ segments: 1, blobs: expect.any(Number) })
      expect(report.repacked.bytesFreed).toBeGreaterThanOrEqual(dead.length)
      expect(readFileSync(path.join(m.mountpoint, 'pair/live.bin')).equals(live)).toBe(true)
      await m.umount()
      const out = path.join(ctx.backend.home, 'live.out')
      await ok(['get', 'sparse:/pair/live.bin', out])
      expect(readFileSync(out).equals(live)).toBe(true)
      expect((await s0fs(['fsck', '--read-data'])).code).toBe(0)
      // A second run finds nothing to move, and keeps the relocation the tree still needs.
      const again = await gc()
      expect(again.repacked.segments).toBe(0)
      await ok(['get', 'sparse:/pair/live.bin', out])
      expect(readFileSync(out).equals(live)).toBe(true)
    }, 300_000)

    it('a mounted writer deduplicating against condemned data loses nothing', async () => {
      const content = randomBytes(3 * 1024 * 1024)
      const source = path.join(ctx.backend.home, 'content.bin')
      writeFileSync(source, content)
      // The content's blobs become unreferenced: stored in one volume, then removed from it.
      await ok(['volume', 'create', 'donor'])
      await ok(['put', source, 'donor:/content.bin'])
      await ok(['rm', 'donor:/content.bin'])
      // A mounted writer whose blob index knows those blobs.
      const m = ctx.track(await mountVolume(ctx.backend, { volume: 'writer' }))
      await mustSh(`echo warm > ${m.mountpoint}/warm && sync -f ${m.mountpoint}/warm`)
      const collecting = s0fs(['gc', '--json', '--grace', '0', '--wait', '90s'])
      // Written while GC runs: whether it deduplicates before or after the writer reads the notice, it must survive.
      await mustSh(`cp ${source} ${m.mountpoint}/copy1.bin && sync -f ${m.mountpoint}/copy1.bin`)
      const r = await collecting
      expect(r.code, r.stderr).toBe(0)
      const report = JSON.parse(r.stdout)
      expect(report.writers).toEqual([expect.objectContaining({ volume: 'writer', acknowledged: true })])
      await mustSh(`cp ${source} ${m.mountpoint}/copy2.bin && sync -f ${m.mountpoint}/copy2.bin`)
      await m.umount()
      for (const name of ['copy1.bin', 'copy2.bin']) {
        const out = path.join(ctx.backend.home, `${name}.out`)
        await ok(['get', `writer:/${name}`, out])
        expect(readFileSync(out).equals(content)).toBe(true)
      }
      const check = await s0fs(['fsck', '--read-data'])
      expect(check.code, check.stdout).toBe(0)
    }, 300_000)

    it('a live writer that never acknowledges stops the run before anything is deleted', async () => {
      await ok(['volume', 'create', 'silent'])
      await ok(['volume', 'create', 'trash'])
      await ok(['put', '-', 'trash:/x.bin'], randomBytes(500_000))
      await ok(['volume', 'delete', 'trash'])
      // A writer that does not speak the GC protocol: a bare lease, held by this test process.
      const repo = await Repository.open(ctx.backend.repo!, { kind: 'keyfile', key: await readKeyFile(ctx.backend.env.S0FS_KEY_FILE!) }, s3Opts(ctx.backend))
      const head = await repo.refs.requireVolume('silent')
      const lease = await acquireLease(repo.store, repo.keys, 'silent', head.head.volumeId, { purpose: 'legacy writer' })
      lease.startRenewing()
      try {
        const before = await segBytes()
        const r = await s0fs(['gc', '--grace', '0', '--wait', '2s'])
        expect(r.code).toBe(7)
        expect(r.stderr).toMatch(/nothing deleted.*did not acknowledge.*legacy writer/)
        expect(await segBytes()).toBe(before)
      } finally {
        await lease.release()
        await repo.close()
      }
      const after = await gc()
      expect(after.segments.deleted).toBeGreaterThan(0)
      expect((await s0fs(['fsck', '--read-data'])).code).toBe(0)
    }, 180_000)

    it('bad arguments are usage errors', async () => {
      const r = await s0fs(['gc', '--grace', 'soon'])
      expect(r.code).toBe(2)
      expect(r.stderr).toMatch(/--grace must be a duration/)
    }, 60_000)
  })
}

function s3Opts(backend: Backend): { s3Credentials?: { accessKeyId: string; secretAccessKey: string } } {
  const id = backend.env.AWS_ACCESS_KEY_ID
  const secret = backend.env.AWS_SECRET_ACCESS_KEY
  return id && secret ? { s3Credentials: { accessKeyId: id, secretAccessKey: secret } } : {}
}


