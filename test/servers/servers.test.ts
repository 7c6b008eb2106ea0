/**
 * Proves that every S3 server of the run (patched s3rver, Ceph RGW, and an
 * external one if configured) does what s0fs relies on, using the AWS SDK
 * the way s0fs does (path-style, checksums only when required).
 */
import { randomBytes, randomUUID } from 'node:crypto'
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import type {} from './global-setup.js' // the ProvidedContext declarations for inject()
import type { S3ServerInfo } from './servers.js'

const servers = inject('s3Servers')

function statusOf(err: unknown): number | undefined {
  return (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode
}

describe.each(servers.map((s) => [s.name, s] as const))('%s', (_name, srv: S3ServerInfo) => {
  let s3: S3Client
  const Bucket = srv.bucket
  const base = `${srv.prefix ?? ''}servers-test/${randomUUID()}/`
  const written = new Set<string>()

  const put = async (key: string, body: Uint8Array | string, extra: { IfNoneMatch?: string; IfMatch?: string } = {}) => {
    written.add(base + key)
    return s3.send(new PutObjectCommand({ Bucket, Key: base + key, Body: body, ...extra }))
  }
  const get = async (key: string, Range?: string) => {
    const res = await s3.send(new GetObjectCommand({ Bucket, Key: base + key, Range }))
    return { res, body: Buffer.from(await res.Body!.transformToByteArray()) }
  }
  const expectStatus = async (p: Promise<unknown>, status: number) => {
    const err = await p.then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(err, `expected HTTP ${status}`).toBeDefined()
    expect(statusOf(err)).toBe(status)
  }

  beforeAll(() => {
    s3 = new S3Client({
      endpoint: srv.endpoint,
      region: srv.region,
      forcePathStyle: true,
      credentials: { accessKeyId: srv.accessKeyId, secretAccessKey: srv.secretAccessKey },
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    })
  })

  afterAll(async () => {
    const keys = [...written]
    for (let i = 0; i < keys.length; i += 1000) {
      await s3
        .send(new DeleteObjectsCommand({ Bucket, Delete: { Objects: keys.slice(i, i + 1000).map((Key) => ({ Key })) } }))
        .catch(() => {})
    }
    s3?.destroy()
  })

  it('PUT then GET returns the exact bytes (0 B, 1 B, 1 MiB random), HEAD the size', async () => {
    for (const size of [0, 1, 1 << 20]) {
      const data = randomBytes(size)
      const { ETag } = await put(`bytes-${size}`, data)
      expect(ETag).toMatch(/^"[0-9a-f]{32}"$/)
      const { body, res } = await get(`bytes-${size}`)
      expect(body.length).toBe(size)
      expect(body.equals(data)).toBe(true)
      expect(res.ETag).toBe(ETag)
      const head = await s3.send(new HeadObjectCommand({ Bucket, Key: `${base}bytes-${size}` }))
      expect(head.ContentLength).toBe(size)
      expect(head.ETag).toBe(ETag)
    }
    await expectStatus(s3.send(new HeadObjectCommand({ Bucket, Key: `${base}absent` })), 404)
    await expectStatus(get('absent'), 404)
  })

  it('ranged GET: bytes=a-b, bytes=a-, bytes=-n, bytes=0-0, past the end', async () => {
    const data = randomBytes(1000)
    await put('range', data)
    const cases: Array<[string, number, number]> = [
      ['bytes=10-19', 10, 20],
      ['bytes=0-0', 0, 1],
      ['bytes=990-', 990, 1000],
      ['bytes=-7', 993, 1000],
      ['bytes=995-5000', 995, 1000],
      ['bytes=-5000', 0, 1000],
    ]
    for (const [range, start, end] of cases) {
      const { body, res } = await get('range', range)
      expect(body.equals(data.subarray(start, end)), range).toBe(true)
      expect(res.ContentRange, range).toBe(`bytes ${start}-${end - 1}/1000`)
    }
    await expectStatus(get('range', 'bytes=1000-'), 416)
  })

  it('lists in byte order with Prefix, StartAfter, MaxKeys and continuation tokens', async () => {
    // '-' < '.' < '/' < '0' < 'b': a directory-walk order would get these wrong
    const keys = ['a', 'a-b', 'a.c', 'a/x', 'a/y/z', 'ab', 'b0', 'b/c']
    await Promise.all(keys.map((k) => put(`list/${k}`, k)))
    const expected = keys.map((k) => `${base}list/${k}`).sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)))

    const all = await s3.send(new ListObjectsV2Command({ Bucket, Prefix: `${base}list/` }))
    expect(all.Contents?.map((o) => o.Key)).toEqual(expected)
    expect(all.IsTruncated).toBe(false)
    expect(all.Contents?.find((o) => o.Key === `${base}list/a-b`)?.Size).toBe(3)

    const paged: string[] = []
    let token: string | undefined
    let pages = 0
    do {
      const page = await s3.send(
        new ListObjectsV2Command({ Bucket, Prefix: `${base}list/`, MaxKeys: 3, ContinuationToken: token }),
      )
      expect(page.Contents?.length ?? 0).toBeLessThanOrEqual(3)
      paged.push(...(page.Contents ?? []).map((o) => o.Key!))
      token = page.IsTruncated ? page.NextContinuationToken : undefined
      pages++
    } while (token && pages < 10)
    expect(paged).toEqual(expected)
    expect(pages).toBe(3)

    const after = await s3.send(
      new ListObjectsV2Command({ Bucket, Prefix: `${base}list/`, StartAfter: `${base}list/a.c`, MaxKeys: 2 }),
    )
    expect(after.Contents?.map((o) => o.Key)).toEqual(expected.slice(3, 5))
    expect(after.IsTruncated).toBe(true)

    const prefixed = await s3.send(new ListObjectsV2Command({ Bucket, Prefix: `${base}list/a/` }))
    expect(prefixed.Contents?.map((o) => o.Key)).toEqual([`${base}list/a/x`, `${base}list/a/y/z`])

    const del = await s3.send(
      new DeleteObjectsCommand({
        Bucket,
        Delete: { Objects: [...expected.slice(0, 4), `${base}list/never-written`].map((Key) => ({ Key })) },
      }),
    )
    expect(del.Errors ?? []).toEqual([])
    const rest = await s3.send(new ListObjectsV2Command({ Bucket, Prefix: `${base}list/` }))
    expect(rest.Contents?.map((o) => o.Key)).toEqual(expected.slice(4))
  })

  it('multipart upload: create, parts, complete; abort', async () => {
    const Key = `${base}multipart`
    written.add(Key)
    const parts = [randomBytes(5 << 20), randomBytes(1000)]
    const { UploadId } = await s3.send(new CreateMultipartUploadCommand({ Bucket, Key }))
    const etags = []
    for (const [i, Body] of parts.entries()) {
      etags.push((await s3.send(new UploadPartCommand({ Bucket, Key, UploadId, PartNumber: i + 1, Body }))).ETag)
    }
    const done = await s3.send(
      new CompleteMultipartUploadCommand({
        Bucket,
        Key,
        UploadId,
        MultipartUpload: { Parts: etags.map((ETag, i) => ({ ETag, PartNumber: i + 1 })) },
      }),
    )
    const head = await s3.send(new HeadObjectCommand({ Bucket, Key }))
    expect(head.ETag).toMatch(/^"[0-9a-f]{32}-2"$/)
    // Ceph 16.2.15 answers <ETag></ETag> here (fixed in later releases); the object has it
    if (srv.name !== 'ceph' || done.ETag) expect(done.ETag).toBe(head.ETag)
    expect((await get('multipart')).body.equals(Buffer.concat(parts))).toBe(true)

    const aborted = await s3.send(new CreateMultipartUploadCommand({ Bucket, Key: `${Key}-aborted` }))
    await s3.send(
      new UploadPartCommand({ Bucket, Key: `${Key}-aborted`, UploadId: aborted.UploadId, PartNumber: 1, Body: 'x' }),
    )
    await s3.send(new AbortMultipartUploadCommand({ Bucket, Key: `${Key}-aborted`, UploadId: aborted.UploadId }))
    await expectStatus(
      s3.send(
        new UploadPartCommand({ Bucket, Key: `${Key}-aborted`, UploadId: aborted.UploadId, PartNumber: 2, Body: 'y' }),
      ),
      404,
    )
    await expectStatus(s3.send(new HeadObjectCommand({ Bucket, Key: `${Key}-aborted` })), 404)
  })

  describe.runIf(srv.conditionalWrites)('conditional writes', () => {
    it('If-None-Match: * creates once, then 412', async () => {
      await put('inm', 'first', { IfNoneMatch: '*' })
      await expectStatus(put('inm', 'second', { IfNoneMatch: '*' }), 412)
      expect((await get('inm')).body.toString()).toBe('first')
    })

    it('8 concurrent If-None-Match: * PUTs of one key: exactly one wins', async () => {
      for (let round = 0; round < 3; round++) {
        const key = `race-${round}`
        const results = await Promise.allSettled(
          Array.from({ length: 8 }, (_, i) => put(key, `writer-${i}`, { IfNoneMatch: '*' })),
        )
        const winners = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []))
        expect(winners).toHaveLength(1)
        for (const r of results) if (r.status === 'rejected') expect(statusOf(r.reason)).toBe(412)
        expect((await get(key)).body.toString()).toBe(`writer-${winners[0]}`)
      }
    })

    it('If-Match: the current ETag (unquoted) replaces, a stale or wrong one gets 412', async () => {
      const v1 = await put('cas', 'v1')
      const v2 = await put('cas', 'v2', { IfMatch: v1.ETag!.replace(/"/g, '') })
      expect(v2.ETag).not.toBe(v1.ETag)
      await expectStatus(put('cas', 'v3', { IfMatch: v1.ETag!.replace(/"/g, '') }), 412)
      await expectStatus(put('cas', 'v3', { IfMatch: '0123456789abcdef0123456789abcdef' }), 412)
      expect((await get('cas')).body.toString()).toBe('v2')
      // absent key: 412 on s3rver and Ceph; AWS answers 404
      const absent = await put('cas-absent', 'x', { IfMatch: v2.ETag!.replace(/"/g, '') }).then(
        () => 200,
        (e: unknown) => statusOf(e),
      )
      expect(srv.name === 'external' ? [404, 412] : [412]).toContain(absent)
    })
  })
})
