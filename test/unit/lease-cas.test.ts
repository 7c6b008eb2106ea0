import { randomBytes } from 'node:crypto'
import { afterAll, describe, expect, it } from 'vitest'
import { FsError, ROOT, ROOT_INO } from '../../src/fs/index.js'
import { LeaseHeldError, LeaseLostError } from '../../src/meta/index.js'
import { Repository } from '../../src/repo/index.js'
import { FaultStore, S3Store, sleep, type ObjectStore } from '../../src/store/index.js'
import { startS3rver } from '../servers/servers.js'
import { s3Credentials, s3Servers, s3Url, tempDir, type S3ServerInfo } from '../helpers/stores.js'

/**
 * Compare-and-swap and the single-writer lease, on memory and on every live
 * S3 server (Ceph RGW honours conditional writes; s3rver is patched to; an
 * unpatched s3rver shows the lease-fenced fallback).
 */

interface Target {
  name: string
  url: () => string
  credentials?: { accessKeyId: string; secretAccessKey: string }
  conditional: boolean
}

const extra: { stop: () => Promise<void> }[] = []
afterAll(async () => {
  for (const s of extra) await s.stop()
})

function targets(): Target[] {
  const list: Target[] = [{ name: 'memory', url: () => `memory://lease-${randomBytes(4).toString('hex')}`, conditional: true }]
  for (const server of s3Servers()) {
    list.push({ name: `s3:${server.name}`, url: () => s3Url(server), credentials: s3Credentials(server), conditional: server.conditionalWrites })
  }
  return list
}

const key = { kind: 'keyfile' as const, key: randomBytes(32) }

/** A new repository with volume "v", opened again through a FaultStore the test steers. */
async function openBehindFaults(target: Target): Promise<{ url: string; repo: Repository; faults: FaultStore }> {
  const url = target.url()
  const init = await Repository.init(url, key, { s3Credentials: target.credentials })
  await init.createVolume('v')
  await init.close()
  let faults: FaultStore | undefined
  const repo = await Repository.open(url, key, { s3Credentials: target.credentials, wrap: (s: ObjectStore) => (faults = new FaultStore(s)) })
  return { url, repo, faults: faults! }
}

for (const target of targets()) {
  describe(`lease and compare-and-swap: ${target.name}`, () => {
    it('records whether the server honours conditional writes', async () => {
      const repo = await Repository.init(target.url(), key, { s3Credentials: target.credentials })
      expect(repo.config.storage.conditionalWrites).toBe(target.conditional)
      expect((await repo.info()).writerGuarantee).toMatch(target.conditional ? /^atomic/ : /^lease-fenced/)
      await repo.close()
    })

    it('refuses a second writer, and hands over once the first lets go', async () => {
      const url = target.url()
      const portal = tempDir('s0fs-lease')
      const a = await Repository.init(url, key, { s3Credentials: target.credentials })
      await a.createVolume('v')
      const b = await Repository.open(url, key, { s3Credentials: target.credentials })
      try {
        const writer = await a.openVolume('v', { portalDir: portal.dir, purpose: 'writer A' })
        const refused = await b.openVolume('v', { portalDir: portal.dir }).catch((e) => e)
        expect(refused).toBeInstanceOf(LeaseHeldError)
        expect(refused.message).toContain('writer A')
        await writer.fs.create(ROOT, ROOT_INO, Buffer.from('from-a'), 0o644)
        await writer.close()
        const second = await b.openVolume('v', { portalDir: portal.dir })
        expect((await second.fs.lookup(ROOT, ROOT_INO, Buffer.from('from-a'))).ino).toBeGreaterThan(1)
        await second.close()
      } finally {
        await a.close()
        await b.close()
        portal.cleanup()
      }
    })

    it("a head or lease write whose reply was lost is known as the writer's own, not another writer's", async () => {
      const portal = tempDir('s0fs-lease')
      const { repo, faults } = await openBehindFaults(target)
      try {
        const lost: LeaseLostError[] = []
        const writer = await repo.openVolume('v', { portalDir: portal.dir, onLeaseLost: (e) => lost.push(e) })
        await writer.fs.create(ROOT, ROOT_INO, Buffer.from('first'), 0o644)
        // The server stores the head, but the reply never arrives: the commit fails, holding the old ETag.
        faults.options = { lostAckRate: 1, onlyKeys: /^refs\/v\// }
        await expect(writer.commit()).rejects.toThrow(/lost acknowledgement/)
        faults.options = {}
        await writer.fs.create(ROOT, ROOT_INO, Buffer.from('second'), 0o644)
        const next = await writer.commit()
        expect(next?.generation).toBe(3) // on top of the head that did land
        expect(writer.fs.failed).toBeFalsy()

        // The same for a lease renewal.
        faults.options = { lostAckRate: 1, onlyKeys: /^lease\// }
        await expect(writer.lease!.renew()).rejects.toThrow(/lost acknowledgement/)
        faults.options = {}
        await writer.lease!.renew()
        expect(lost).toEqual([])
        expect(() => writer.lease!.assertValid()).not.toThrow()
        await writer.fs.create(ROOT, ROOT_INO, Buffer.from('third'), 0o644)
        await writer.close()

        const check = await repo.openVolume('v', { portalDir: tempDir('s0fs-lease2').dir, readOnly: true })
        for (const name of ['first', 'second', 'third']) expect((await check.fs.lookup(ROOT, ROOT_INO, Buffer.from(name))).ino).toBeGreaterThan(1)
        await check.close()
      } finally {
        await repo.close()
        portal.cleanup()
      }
    }, 60_000)

    it('a writer whose lease expired cannot commit, and newer state is kept', async () => {
      const portal = tempDir('s0fs-lease')
      const { url, repo: stale, faults } = await openBehindFaults(target)
      const fresh = await Repository.open(url, key, { s3Credentials: target.credentials })
      try {
        const lost: LeaseLostError[] = []
        const old = await stale.openVolume('v', { portalDir: portal.dir, leaseTtlMs: 600, onLeaseLost: (e) => lost.push(e) })
        await old.fs.create(ROOT, ROOT_INO, Buffer.from('stale-write'), 0o644)
        // The old writer is cut off from storage: it cannot renew, and its lease runs out.
        faults.outage(60_000)
        await sleep(3_000)
        const next = await fresh.openVolume('v', { portalDir: tempDir('s0fs-lease2').dir })
        await next.fs.create(ROOT, ROOT_INO, Buffer.from('newer'), 0o644)
        await next.close()
        faults.endOutage()
        const err = await old.commit().catch((e) => e)
        expect(err).toBeInstanceOf(LeaseLostError)
        await expect(old.fs.create(ROOT, ROOT_INO, Buffer.from('more'), 0o644)).rejects.toBeInstanceOf(FsError)
        await old.abandon()
        const check = await fresh.openVolume('v', { portalDir: tempDir('s0fs-lease3').dir, readOnly: true })
        expect((await check.fs.lookup(ROOT, ROOT_INO, Buffer.from('newer'))).ino).toBeGreaterThan(1)
        await expect(check.fs.lookup(ROOT, ROOT_INO, Buffer.from('stale-write'))).rejects.toBeInstanceOf(FsError)
      } finally {
        await stale.close()
        await fresh.close()
        portal.cleanup()
      }
    }, 60_000)
  })
}

describe('S3 specifics', () => {
  it('uploads big objects in parts and reads them back', async () => {
    const server = s3Servers()[0]
    expect(server).toBeDefined()
    const store = new S3Store({
      bucket: server.bucket,
      prefix: `mp-${randomBytes(4).toString('hex')}`,
      endpoint: server.endpoint,
      region: server.region,
      credentials: s3Credentials(server),
      multipartThreshold: 12 * 1024 * 1024,
      partSize: 5 * 1024 * 1024,
    })
    const data = randomBytes(21 * 1024 * 1024 + 5)
    await store.put('big/object', data)
    expect(store.counters.put).toBe(1 + 5 + 1) // create, 5 parts, complete
    expect((await store.get('big/object')).equals(data)).toBe(true)
    expect((await store.get('big/object', { start: 5 * 1024 * 1024 - 10, end: 5 * 1024 * 1024 + 10 })).equals(data.subarray(5 * 1024 * 1024 - 10, 5 * 1024 * 1024 + 10))).toBe(true)
    await store.close()
  })

  it('falls back to lease fencing on a server that ignores conditional writes', async () => {
    const plain = await startS3rver({ conditional: false })
    extra.push(plain)
    const info: S3ServerInfo = { ...plain, stop: undefined } as unknown as S3ServerInfo
    const url = s3Url(info)
    const repo = await Repository.init(url, key, { s3Credentials: s3Credentials(info) })
    expect(repo.config.storage.conditionalWrites).toBe(false)
    await repo.createVolume('v')
    const portal = tempDir('s0fs-plain')
    const other = await Repository.open(url, key, { s3Credentials: s3Credentials(info) })
    try {
      const writer = await repo.openVolume('v', { portalDir: portal.dir })
      await expect(other.openVolume('v', { portalDir: portal.dir })).rejects.toBeInstanceOf(LeaseHeldError)
      await writer.fs.mkdir(ROOT, ROOT_INO, Buffer.from('dir'), 0o755)
      await writer.close()
      expect((await other.volumeInfo('v')).generation).toBe(2)
    } finally {
      await repo.close()
      await other.close()
      portal.cleanup()
    }
  })

  it('says which credentials are wrong, and changes nothing', async () => {
    const server = s3Servers().find((s) => s.name === 'ceph')
    if (!server) return expect(process.env.S0FS_TEST_NO_CEPH).toBe('1')
    const url = s3Url(server)
    const err = await Repository.init(url, key, { s3Credentials: { accessKeyId: 'nobody', secretAccessKey: 'wrong' } }).catch((e) => e)
    expect(err.message).toMatch(/access denied/)
    const probe = new S3Store({ bucket: server.bucket, prefix: url.split('/')[3].split('?')[0], endpoint: server.endpoint, credentials: s3Credentials(server) })
    expect((await probe.listPage('')).objects).toEqual([])
    await probe.close()
  })
})
