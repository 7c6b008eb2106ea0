import { createHash, randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { Client as MinioClient } from 'minio'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { fileBackend, mountVolume, mustSh, s3Backend, type Backend, type Mounted } from '../helpers/mount.js'
import { s3Servers } from '../helpers/stores.js'
import { compareTrees, snapshotTree } from '../helpers/tree.js'

/**
 * Real tools on a real mount, on every backend (file://, s3rver, Ceph RGW):
 * git, tar, cp -a, fio --verify, sqlite3, stress-ng, parallel writers. Then
 * unmount, mount again, and check every byte and attribute survived.
 */

const fixtures = mkdtempSync(path.join(tmpdir(), 's0fs-fixtures-'))
const repoRoot = path.join(import.meta.dirname, '../..')

/** A source tree with the awkward cases: sizes, modes, links, fifos, long and non-ASCII names, xattrs, old mtimes. */
async function makeFixtureTree(dir: string): Promise<void> {
  mkdirSync(path.join(dir, 'a/b/c'), { recursive: true })
  mkdirSync(path.join(dir, 'sticky'))
  mkdirSync(path.join(dir, 'setgid'))
  for (const size of [0, 1, 4095, 4096, 4097, 65536, 1024 * 1024 + 7]) writeFileSync(path.join(dir, `a/size-${size}`), randomBytes(size))
  writeFileSync(path.join(dir, 'a/b/c/big.bin'), randomBytes(6 * 1024 * 1024 + 3))
  writeFileSync(path.join(dir, 'a/text.txt'), 'hello s0fs\n'.repeat(1000))
  writeFileSync(path.join(dir, 'x'.repeat(255)), 'long name')
  writeFileSync(path.join(dir, 'ünïcødé 日本 name'), 'unicode')
  await mustSh(
    [
      `cd ${dir}`,
      'ln a/text.txt a/hardlink',
      'ln -s text.txt a/symlink',
      'ln -s /nonexistent/target dangling',
      'mkfifo a/fifo',
      'chmod 0600 a/size-1',
      'chmod 0444 a/size-4095',
      'chmod 4755 a/size-4096',
      'chmod 1777 sticky',
      'chmod 2775 setgid',
      'setfattr -n user.checksum -v 0xdeadbeef a/text.txt',
      'setfattr -n user.empty a/size-0',
      'touch -h -d "2001-02-03 04:05:06.123456789" a/size-1 a/b',
    ].join(' && '),
  )
}

const sourceTree = path.join(fixtures, 'tree')
const tarball = path.join(fixtures, 'src.tar')
const gitSource = path.join(fixtures, 'gitsrc')

beforeAll(async () => {
  mkdirSync(sourceTree)
  await makeFixtureTree(sourceTree)
  // A real source tarball: the AWS SDK's JavaScript (a few thousand entries).
  await mustSh(`tar -cf ${tarball} -C ${repoRoot}/node_modules @aws-sdk @smithy`)
  // A small git repository of real files, with history.
  await mustSh(
    `git init -q ${gitSource} && cp -a ${repoRoot}/src ${gitSource}/ && cd ${gitSource} && git add -A && git -c user.name=t -c user.email=t@t commit -qm one && echo more >> src/store/index.ts && git -c user.name=t -c user.email=t@t commit -qam two`,
  )
}, 120_000)

afterAll(() => rmSync(fixtures, { recursive: true, force: true }))

interface BackendCase {
  name: string
  make: () => Promise<Backend>
}

const cases: BackendCase[] = [{ name: 'file', make: fileBackend }, ...s3Servers().map((s) => ({ name: `s3:${s.name}`, make: () => s3Backend(s) }))]

for (const c of cases) {
  describe(`real tools on a mounted volume: ${c.name}`, () => {
    let backend: Backend
    let m: Mounted
    let tarSnapshot: ReturnType<typeof snapshotTree>
    let cpSnapshot: ReturnType<typeof snapshotTree>
    let gitHead: string
    const parallel: Record<string, string> = {}

    beforeAll(async () => {
      backend = await c.make()
      m = await mountVolume(backend)
    }, 180_000)

    afterAll(async () => {
      await m?.teardown()
      backend?.cleanup()
    }, 180_000)

    it('git clone, edit, commit, status', async () => {
      const repo = path.join(m.mountpoint, 'repo')
      await mustSh(`git clone -q ${gitSource} ${repo}`)
      await mustSh(`cd ${repo} && echo "// edited on s0fs" >> src/index.ts && git add -A && git -c user.name=t -c user.email=t@t commit -qm three`)
      expect(await mustSh(`cd ${repo} && git status --porcelain`)).toBe('')
      expect(await mustSh(`cd ${repo} && git fsck --strict 2>&1 && git log --oneline | wc -l`)).toMatch(/3\s*$/)
      gitHead = (await mustSh(`cd ${repo} && git rev-parse HEAD`)).trim()
    }, 120_000)

    it('tar -x of a real tarball matches its source', async () => {
      const dest = path.join(m.mountpoint, 'tar')
      mkdirSync(dest)
      await mustSh(`tar -xf ${tarball} -C ${dest}`, { timeoutMs: 300_000 })
      const expected = snapshotTree(path.join(repoRoot, 'node_modules/@aws-sdk'))
      tarSnapshot = snapshotTree(path.join(dest, '@aws-sdk'))
      expect(compareTrees(expected, tarSnapshot, { mtime: 's' })).toEqual([])
    }, 300_000)

    it('cp -a keeps every byte and attribute', async () => {
      const dest = path.join(m.mountpoint, 'cpa')
      await mustSh(`cp -a ${sourceTree} ${dest}`)
      cpSnapshot = snapshotTree(dest)
      expect(compareTrees(snapshotTree(sourceTree), cpSnapshot, { mtime: 'ns', nlink: true })).toEqual([])
      expect(await mustSh(`getfattr -n user.checksum --only-values ${dest}/a/text.txt | xxd -p`)).toMatch(/^deadbeef/)
    }, 120_000)

    it('fio random writes and reads verify (crc32c)', async () => {
      const out = await mustSh(
        `fio --name=verify --filename=${m.mountpoint}/fio.dat --size=24M --rw=randwrite --bs=4k --ioengine=psync --verify=crc32c --verify_fatal=1 --verify_state_save=0 --do_verify=1 --output-format=terse`,
        { timeoutMs: 300_000 },
      )
      expect(out.split(';')[4]).toBe('0') // terse field 5: error
    }, 300_000)

    it('sqlite3 keeps committed transactions intact', async () => {
      const db = path.join(m.mountpoint, 'app.db')
      let script = 'create table t(a integer, b text);\n'
      for (let tx = 0; tx < 10; tx++) {
        script += 'begin;\n'
        for (let i = 0; i < 300; i++) script += `insert into t values(${tx * 300 + i}, '${randomBytes(8).toString('hex')}');\n`
        script += 'commit;\n'
      }
      writeFileSync(path.join(fixtures, `${c.name.replace(/\W/g, '_')}.sql`), script)
      await mustSh(`sqlite3 ${db} < ${path.join(fixtures, `${c.name.replace(/\W/g, '_')}.sql`)}`)
      expect((await mustSh(`sqlite3 ${db} "pragma integrity_check; select count(*), sum(a) from t;"`)).trim()).toBe('ok\n3000|4498500')
    }, 120_000)

    it('stress-ng filesystem stressors pass with verification', async () => {
      const dir = path.join(m.mountpoint, 'stress')
      mkdirSync(dir)
      const out = await mustSh(
        `stress-ng --temp-path ${dir} --hdd 1 --hdd-bytes 4M --hdd-opts wr-rnd,rd-rnd --dir 1 --rename 1 --link 1 --symlink 1 --verify --timeout 6s 2>&1`,
        { timeoutMs: 180_000 },
      )
      expect(out).toMatch(/successful run completed/)
      expect(out).not.toMatch(/fail|error/i)
    }, 200_000)

    it('several writers in different files at once', async () => {
      const dir = path.join(m.mountpoint, 'parallel')
      mkdirSync(dir)
      const writers = [0, 1, 2, 3].map(async (i) => {
        const file = path.join(dir, `w${i}`)
        await mustSh(`head -c ${(3 + i) * 1024 * 1024} /dev/urandom > ${path.join(fixtures, `${c.name.replace(/\W/g, '_')}-w${i}`)} && dd if=${path.join(fixtures, `${c.name.replace(/\W/g, '_')}-w${i}`)} of=${file} bs=64k conv=fsync status=none`)
        parallel[`w${i}`] = (await mustSh(`sha256sum < ${path.join(fixtures, `${c.name.replace(/\W/g, '_')}-w${i}`)}`)).split(' ')[0]
        expect((await mustSh(`sha256sum < ${file}`)).split(' ')[0]).toBe(parallel[`w${i}`])
      })
      await Promise.all(writers)
    }, 180_000)

    it('after unmount and mount again, everything is still there', async () => {
      await m.umount()
      m = await mountVolume(backend, { mountpoint: m.mountpoint })
      expect(compareTrees(tarSnapshot, snapshotTree(path.join(m.mountpoint, 'tar/@aws-sdk')), { mtime: 'ns' })).toEqual([])
      expect(compareTrees(cpSnapshot, snapshotTree(path.join(m.mountpoint, 'cpa')), { mtime: 'ns', nlink: true })).toEqual([])
      const repo = path.join(m.mountpoint, 'repo')
      expect((await mustSh(`cd ${repo} && git rev-parse HEAD`)).trim()).toBe(gitHead)
      expect(await mustSh(`cd ${repo} && git status --porcelain && git fsck --strict 2>&1`)).toBe('')
      expect((await mustSh(`sqlite3 ${m.mountpoint}/app.db "pragma integrity_check; select count(*) from t;"`)).trim()).toBe('ok\n3000')
      await mustSh(
        `fio --name=verify --filename=${m.mountpoint}/fio.dat --size=24M --rw=randwrite --bs=4k --ioengine=psync --verify=crc32c --verify_fatal=1 --verify_state_save=0 --verify_only`,
        { timeoutMs: 300_000 },
      )
      for (const [name, sum] of Object.entries(parallel)) {
        expect(createHash('sha256').update(await import('node:fs').then((f) => f.readFileSync(path.join(m.mountpoint, 'parallel', name)))).digest('hex')).toBe(sum)
      }
    }, 600_000)

    if (c.name !== 'file') {
      it('the bucket, read by an independent S3 client, holds no plaintext and no file name', async () => {
        await m.umount()
        const url = new URL(backend.repo!)
        const endpoint = new URL(url.searchParams.get('endpoint')!)
        const client = new MinioClient({
          endPoint: endpoint.hostname,
          port: Number(endpoint.port),
          useSSL: false,
          pathStyle: true,
          region: url.searchParams.get('region') ?? 'us-east-1',
          accessKey: backend.env.AWS_ACCESS_KEY_ID!,
          secretKey: backend.env.AWS_SECRET_ACCESS_KEY!,
        })
        const needles = ['hello s0fs\nhello s0fs', 'edited on s0fs', 'putIfAbsent(key', 'big.bin', 'size-4095', 'ünïcødé 日本', 'x'.repeat(40), 'user.checksum'].map((n) =>
          Buffer.from(n),
        )
        const names: string[] = []
        for await (const o of client.listObjectsV2(url.hostname, url.pathname.slice(1) + '/', true) as AsyncIterable<{ name: string }>) names.push(o.name)
        let bytes = 0
        for (const name of names) {
          for (const n of needles) expect(name.includes(n.toString()), `${n.toString()} in the key ${name}`).toBe(false)
          // The config is plaintext by design (format, KDF parameters, wrapped keys); it names no file.
          if (name.endsWith('/config')) continue
          const chunks: Buffer[] = []
          for await (const chunk of await client.getObject(url.hostname, name)) chunks.push(chunk as Buffer)
          const data = Buffer.concat(chunks)
          bytes += data.length
          for (const n of needles) expect(data.includes(n), `${n.toString()} found in ${name}`).toBe(false)
        }
        expect(names.length).toBeGreaterThan(10)
        expect(bytes).toBeGreaterThan(10 * 1024 * 1024)
      }, 300_000)
    }
  })
}
