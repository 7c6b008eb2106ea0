#!/usr/bin/env node
// A local S3 server for the tests: s3rver 3.7.1 (from node_modules) with its
// defects patched at runtime. Nothing under node_modules is edited on disk.
//
//   node --openssl-legacy-provider test/servers/s3rver-main.mjs \
//        --port 0 --dir DIR [--no-conditional] [--watch-stdin] [--remove-dir]
//
// Listens on 127.0.0.1 with one bucket, `s0fs-test` (credentials S3RVER /
// S3RVER), prints one JSON line `{"port":N}` to stdout once listening, and
// exits cleanly on SIGTERM/SIGINT. With --watch-stdin it also exits when its
// stdin reaches EOF, i.e. when the parent that holds the pipe dies; with
// --remove-dir it deletes DIR when it exits that way or by signal.
//
// State lives under DIR: DIR/data is s3rver's store, DIR/tmp holds uploads
// in flight (same filesystem, so the final rename(2) is atomic).
//
// Patches (each marked `PATCH n` below; test/servers/README.md has the list):
//  1. PUT / UploadPart / CompleteMultipartUpload answered before the file was
//     written and closed (the store resolved on the hashing Transform's
//     'finish', not the WriteStream's 'close'), and overwrote objects in
//     place, so a concurrent GET could read a truncated file. Now: stream to
//     a temp file with stream.pipeline (resolves after close), then rename
//     the metadata, md5 and object files into place under a per-key lock;
//     readers take the same lock while they stat+open, then read from their
//     own fd. An aborted upload leaves nothing behind.
//  2. Conditional PUT: `If-None-Match: *` and `If-Match: <etag>` (quoted or
//     not, `*`, or a comma list) were ignored. They are checked under the
//     per-key lock right before the rename, so check+write is atomic within
//     this process. Also on CompleteMultipartUpload. Off with --no-conditional.
//  3. aws-chunked request bodies (SDK flexible checksums with a streaming
//     body, or SigV4 streaming signatures) were stored with their framing.
//     They are decoded; `aws-chunked` is dropped from the stored
//     Content-Encoding.
//  4. Ranged GET: `bytes=-N` returned the first N+1 bytes instead of the last
//     N; `bytes=0-0` (any end of 0) returned the whole object. GET/HEAD is
//     reimplemented: correct ranges, 416 InvalidRange when unsatisfiable,
//     If-Match / If-None-Match / If-(Un)Modified-Since, no fd leak on 304.
//  5. ListObjects(V2): keys came out in directory-walk order, not byte order
//     ("a/x" before "a-b", "ab!" before "ab"), so StartAfter/continuation
//     pages skipped and repeated keys; delimiter prefixes did not count
//     towards MaxKeys. Reimplemented (byte order, opaque continuation token).
//  6. DeleteObjects: keys were parsed as XML numbers ("007" -> 7, "1e3" ->
//     1000) and numeric keys crashed with 500. Reimplemented with string
//     parsing; supports Quiet and reports per-key errors.
//  7. AbortMultipartUpload answered 405 MethodNotAllowed. Implemented.
//     UploadPart/Complete on an unknown upload id now give 404 NoSuchUpload
//     (the id was used as a path component unchecked); Complete validates
//     part numbers, ETags, order and the 5 MiB minimum part size like S3 and
//     returns an S3-style multipart ETag (md5-of-md5s "-N"); it used to hang
//     forever when a listed part did not exist.
//  8. Keys were mapped to paths with path.join, so "a//b" and "a/b" were the
//     same object, "/a" was "a", and "../x" escaped the bucket directory.
//     Empty, "." and ".." path segments (and "%") are now escaped.
//  9. CopyObject copied files in place without the lock; it now goes through
//     the patched PUT path.
//
// Not fixed (documented in README.md): SigV4 signatures are not verified
// (any secret is accepted); keys with an empty path segment ("a//b", "/a")
// do not match s3rver's routes (404 without an S3 error body); ListParts /
// ListMultipartUploads are not implemented; encoding-type=url in listings and
// x-amz-checksum-* headers are ignored; a key segment is limited to ~240
// bytes (file name limit).

import { createRequire } from 'node:module'
import crypto from 'node:crypto'
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import path from 'node:path'
import { Readable, Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'

// ---------------------------------------------------------------- arguments
const args = process.argv.slice(2)
let port = 0
let dir
let conditional = true
let watchStdin = false
let removeDir = false
for (let i = 0; i < args.length; i++) {
  const a = args[i]
  if (a === '--port') port = Number(args[++i])
  else if (a === '--dir') dir = args[++i]
  else if (a === '--no-conditional') conditional = false
  else if (a === '--watch-stdin') watchStdin = true
  else if (a === '--remove-dir') removeDir = true
  else {
    process.stderr.write(`s3rver-main: unknown argument ${a}\n`)
    process.exit(2)
  }
}
if (!dir || !Number.isInteger(port) || port < 0) {
  process.stderr.write('usage: s3rver-main.mjs --port N --dir DIR [--no-conditional] [--watch-stdin] [--remove-dir]\n')
  process.exit(2)
}
const BUCKET = 's0fs-test'
const DATA = path.resolve(dir, 'data')
const TMP = path.resolve(dir, 'tmp')
fs.mkdirSync(DATA, { recursive: true })
fs.rmSync(TMP, { recursive: true, force: true })
fs.mkdirSync(TMP, { recursive: true })

// ---------------------------------------------------- s3rver's own modules
const requireHere = createRequire(import.meta.url)
const requireS3rver = createRequire(requireHere.resolve('s3rver')) // .../s3rver/lib/s3rver.js
const S3rver = requireS3rver('./s3rver.js')
const FilesystemStore = requireS3rver('./stores/filesystem.js')
const objectCtrl = requireS3rver('./controllers/object.js')
const bucketCtrl = requireS3rver('./controllers/bucket.js')
const router = requireS3rver('./routes.js')
const S3Error = requireS3rver('./models/error.js')
const S3Object = requireS3rver('./models/object.js')
const { DUMMY_ACCOUNT } = requireS3rver('./models/account.js')
const { capitalizeHeader } = requireS3rver('./utils.js')
const xmlParser = requireS3rver('fast-xml-parser') // s3rver's own (v3) copy
const he = requireS3rver('he')
const { pick, pickBy } = requireS3rver('lodash')

const store = FilesystemStore.prototype
const OBJECT_SUFFIX = '._S3rver_object'
const UPLOADS_DIR = '._S3rver_uploads'
const MIN_PART_SIZE = 5 * 1024 * 1024

// ------------------------------------------------------------- helpers
/** Per-key mutex: a promise chain per bucket+key. Not reentrant. */
const keyLocks = new Map()
function withKeyLock(bucket, key, fn) {
  const id = `${bucket}\0${key}`
  const prev = keyLocks.get(id) ?? Promise.resolve()
  const run = prev.then(fn)
  const tail = run.then(
    () => {},
    () => {},
  )
  keyLocks.set(id, tail)
  tail.then(() => {
    if (keyLocks.get(id) === tail) keyLocks.delete(id)
  })
  return run
}

const unquote = (etag) =>
  String(etag)
    .trim()
    .replace(/^W\//, '')
    .replace(/^"(.*)"$/, '$1')

/** Byte order of the UTF-8 encodings, computed on UTF-16 code units. */
function compareUtf8(a, b) {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i)
    let y = b.charCodeAt(i)
    if (x === y) continue
    if (x >= 0xd800 && y >= 0xd800) {
      // surrogates (code points >= U+10000) sort after U+E000..U+FFFF in UTF-8
      x = x <= 0xdfff ? x + 0x2000 : x - 0x800
      y = y <= 0xdfff ? y + 0x2000 : y - 0x800
    }
    return x < y ? -1 : 1
  }
  return a.length - b.length
}

const rmQuiet = (p) => fsp.rm(p, { force: true }).catch(() => {})

/** rename(2) into place, creating the parent; retried if a concurrent delete pruned it. */
async function renameInto(src, dst) {
  for (let attempt = 0; ; attempt++) {
    await fsp.mkdir(path.dirname(dst), { recursive: true })
    try {
      await fsp.rename(src, dst)
      return
    } catch (err) {
      if (err.code !== 'ENOENT' || attempt >= 10) throw err
    }
  }
}

/** Metadata the store keeps for an object (same selection as s3rver's putMetadata). */
const storedMetadata = (metadata) => ({
  ...pick(metadata, S3Object.ALLOWED_METADATA),
  ...pickBy(metadata, (_v, k) => k.startsWith('x-amz-meta-')),
})

// PATCH 3: aws-chunked decoding --------------------------------------------
/**
 * Decodes an `aws-chunked` body: `<hex>[;chunk-signature=..]\r\n<data>\r\n`
 * ... `0[;..]\r\n[trailer:value\r\n...]\r\n`. Signatures and trailing
 * checksums are not verified.
 */
class AwsChunkedDecoder extends Transform {
  constructor() {
    super()
    this.buf = Buffer.alloc(0)
    this.state = 'size'
    this.remaining = 0
  }
  _transform(chunk, _enc, cb) {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk
    try {
      this.drain()
      cb()
    } catch (err) {
      cb(err)
    }
  }
  drain() {
    const bad = (what) => new S3Error('IncompleteBody', `Malformed aws-chunked body (${what})`)
    for (;;) {
      if (this.state === 'data') {
        if (!this.buf.length) return
        const n = Math.min(this.remaining, this.buf.length)
        this.push(this.buf.subarray(0, n))
        this.buf = this.buf.subarray(n)
        this.remaining -= n
        if (this.remaining === 0) this.state = 'crlf'
      } else if (this.state === 'crlf') {
        if (this.buf.length < 2) return
        if (this.buf[0] !== 13 || this.buf[1] !== 10) throw bad('missing CRLF after chunk')
        this.buf = this.buf.subarray(2)
        this.state = 'size'
      } else if (this.state === 'end') {
        this.buf = Buffer.alloc(0)
        return
      } else {
        // 'size' line or a 'trailer' line
        const i = this.buf.indexOf('\r\n')
        if (i < 0) {
          if (this.buf.length > 8192) throw bad('line too long')
          return
        }
        const line = this.buf.subarray(0, i).toString('latin1')
        this.buf = this.buf.subarray(i + 2)
        if (this.state === 'trailer') {
          if (line === '') this.state = 'end'
          continue
        }
        const hex = line.split(';')[0].trim()
        if (!/^[0-9a-fA-F]{1,16}$/.test(hex)) throw bad('chunk size')
        const size = parseInt(hex, 16)
        if (size === 0) this.state = 'trailer'
        else {
          this.remaining = size
          this.state = 'data'
        }
      }
    }
  }
  _flush(cb) {
    // the final empty line after the trailers is optional in practice
    if (this.state === 'trailer' || this.state === 'end') cb()
    else cb(new S3Error('IncompleteBody', 'Truncated aws-chunked body'))
  }
}

function isAwsChunked(ctx) {
  const enc = (ctx.get('content-encoding') || '').split(',').map((s) => s.trim().toLowerCase())
  return enc.includes('aws-chunked') || (ctx.get('x-amz-content-sha256') || '').startsWith('STREAMING-')
}

/** The request body as a stream of object bytes; request headers with aws-chunked removed. */
function uploadBody(ctx) {
  const headers = { ...ctx.headers }
  if (!isAwsChunked(ctx)) return { body: ctx.req, headers }
  const enc = (headers['content-encoding'] || '')
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s && s.toLowerCase() !== 'aws-chunked')
  if (enc.length) headers['content-encoding'] = enc.join(', ')
  else delete headers['content-encoding']
  const decoder = new AwsChunkedDecoder()
  ctx.req.on('error', (err) => decoder.destroy(err))
  ctx.req.on('aborted', () => decoder.destroy(new Error('request aborted')))
  return { body: ctx.req.pipe(decoder), headers }
}

// PATCH 1: complete writes through a temp file -----------------------------
/** Streams `content` (Buffer or stream) to a fresh temp file; resolves after the fd is closed. */
async function writeTemp(content, contentMd5) {
  const tmpPath = path.join(TMP, crypto.randomUUID())
  const hash = crypto.createHash('md5')
  let size = 0
  const meter = new Transform({
    transform(chunk, _enc, cb) {
      hash.update(chunk)
      size += chunk.length
      cb(null, chunk)
    },
  })
  const source = Buffer.isBuffer(content) ? Readable.from([content]) : content
  try {
    await pipeline(source, meter, fs.createWriteStream(tmpPath))
  } catch (err) {
    await rmQuiet(tmpPath)
    throw err
  }
  const digest = hash.digest()
  if (contentMd5 && digest.toString('base64') !== contentMd5.trim()) {
    await rmQuiet(tmpPath)
    throw new S3Error('BadDigest', 'The Content-MD5 you specified did not match what we received.')
  }
  return { tmpPath, size, md5: digest.toString('hex') }
}

// PATCH 8: reversible key -> path encoding --------------------------------
// Every path segment: '%' -> '%25'; '' -> '%E'; '.'/'..' -> '%2E'/'%2E%2E'.
// (The bucket-level resources use key '' which stays ''.)
FilesystemStore.encodeKeyPath = (key) =>
  key === ''
    ? ''
    : key
        .split('/')
        .map((seg) => {
          seg = seg.replace(/%/g, '%25')
          if (seg === '') return '%E'
          if (seg === '.' || seg === '..') return seg.replace(/\./g, '%2E')
          return seg
        })
        .join('/')
const decodeSegment = (seg) => (seg === '%E' ? '' : seg.replace(/%(25|2E)/g, (_m, h) => (h === '25' ? '%' : '.')))
FilesystemStore.decodeKeyPath = (p) => p.split('/').map(decodeSegment).join('/')

// PATCH 1 (store side) -----------------------------------------------------
const getMetadataUnlocked = store.getMetadata

/** Metadata as s3rver reports it (etag quoted), consistent with concurrent writers. */
store.getMetadata = function getMetadata(bucket, key) {
  return withKeyLock(bucket, key, () => getMetadataUnlocked.call(this, bucket, key))
}

/** Current unquoted ETag or undefined; call under the key lock. */
async function currentEtag(st, bucket, key) {
  try {
    return unquote((await getMetadataUnlocked.call(st, bucket, key)).etag)
  } catch (err) {
    if (err.code === 'ENOENT') return undefined
    throw err
  }
}

/** PATCH 2: evaluate PUT preconditions against the current ETag. */
function checkPreconditions(cond, etag) {
  if (!cond) return
  const failed = () => {
    throw new S3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold', {
      Condition: cond.ifNoneMatch ? 'If-None-Match' : 'If-Match',
    })
  }
  if (cond.ifNoneMatch && etag !== undefined) failed()
  if (cond.ifMatch !== undefined) {
    if (etag === undefined) failed()
    if (!cond.ifMatch.includes('*') && !cond.ifMatch.includes(etag)) failed()
  }
}

/**
 * putObject(object, { cond, contentMd5, etag }): body to a temp file, then under the
 * key lock: check preconditions, rename metadata, md5 and object into place.
 * `etag` overrides the stored ETag (multipart).
 */
store.putObject = async function putObject(object, opts = {}) {
  const { bucket, key } = object
  const { tmpPath, size, md5 } = await writeTemp(object.content, opts.contentMd5)
  const etag = opts.etag ?? md5
  const tmpMd5 = `${tmpPath}.md5`
  const tmpMeta = `${tmpPath}.json`
  try {
    await fsp.writeFile(tmpMd5, etag)
    await fsp.writeFile(tmpMeta, JSON.stringify(storedMetadata(object.metadata), null, 2))
    await withKeyLock(bucket, key, async () => {
      if (opts.cond) checkPreconditions(opts.cond, await currentEtag(this, bucket, key))
      await renameInto(tmpMeta, this.getResourcePath(bucket, key, 'metadata.json'))
      await renameInto(tmpMd5, this.getResourcePath(bucket, key, 'object.md5'))
      await renameInto(tmpPath, this.getResourcePath(bucket, key, 'object'))
    })
  } finally {
    await Promise.all([rmQuiet(tmpPath), rmQuiet(tmpMd5), rmQuiet(tmpMeta)])
  }
  return { size, md5: etag }
}

/** Opens an object for reading: { fh, metadata } taken atomically, or null when absent. */
function openObject(st, bucket, key) {
  return withKeyLock(bucket, key, async () => {
    let fh
    try {
      fh = await fsp.open(st.getResourcePath(bucket, key, 'object'), 'r')
      return { fh, metadata: await getMetadataUnlocked.call(st, bucket, key) }
    } catch (err) {
      await fh?.close()
      if (err.code === 'ENOENT') return null
      throw err
    }
  })
}

store.getObject = async function getObject(bucket, key, options) {
  // Only used by s3rver's static-website middleware now; GET/HEAD go through objectCtrl.getObject.
  const opened = await openObject(this, bucket, key)
  if (!opened) return null
  const size = Number(opened.metadata['content-length'])
  const start = options?.start ?? 0
  const end = Math.min(options?.end ?? size - 1, size - 1)
  const object = new S3Object(bucket, key, opened.fh.createReadStream({ start, end: Math.max(start, end) }), opened.metadata)
  if (options && (options.start !== undefined || options.end !== undefined)) object.range = { start, end }
  return object
}

store.existsObject = async function existsObject(bucket, key) {
  return withKeyLock(bucket, key, async () => (await currentEtag(this, bucket, key)) !== undefined)
}

store.deleteObject = async function deleteObject(bucket, key) {
  await withKeyLock(bucket, key, () =>
    Promise.all(['object', 'object.md5', 'metadata.json'].map((r) => rmQuiet(this.getResourcePath(bucket, key, r)))),
  )
  // Prune now-empty parent directories; a concurrent writer may refill one
  // (ENOTEMPTY) or remove it first (ENOENT): stop there, renameInto retries.
  const bucketPath = this.getBucketPath(bucket)
  const parts = FilesystemStore.encodeKeyPath(key).split('/')
  parts.pop()
  while (parts.length) {
    try {
      await fsp.rmdir(path.join(bucketPath, ...parts))
    } catch {
      break
    }
    parts.pop()
  }
}

// PATCH 9
store.copyObject = async function copyObject(srcBucket, srcKey, destBucket, destKey, replacementMetadata) {
  const src = await openObject(this, srcBucket, srcKey)
  if (!src) throw Object.assign(new Error('source vanished'), { code: 'ENOENT' })
  await this.putObject(new S3Object(destBucket, destKey, src.fh.createReadStream(), replacementMetadata || src.metadata))
  return this.getMetadata(destBucket, destKey)
}

// PATCH 7 (store side): multipart uploads ----------------------------------
function uploadDir(st, bucket, uploadId) {
  if (!/^[0-9a-f]{32}$/.test(String(uploadId))) return undefined
  return path.join(st.getResourcePath(bucket, undefined, 'uploads'), uploadId)
}
async function readUpload(st, bucket, uploadId) {
  const dirPath = uploadDir(st, bucket, uploadId)
  try {
    if (!dirPath) throw Object.assign(new Error(), { code: 'ENOENT' })
    const [key, metadata] = await Promise.all([
      fsp.readFile(path.join(dirPath, 'key'), 'utf8'),
      fsp.readFile(path.join(dirPath, 'metadata'), 'utf8').then(JSON.parse),
    ])
    return { dirPath, key, metadata }
  } catch (err) {
    if (err.code !== 'ENOENT') throw err
    throw new S3Error(
      'NoSuchUpload',
      'The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.',
      { UploadId: String(uploadId) },
    )
  }
}

store.putPart = async function putPart(bucket, uploadId, partNumber, content, opts = {}) {
  const { dirPath } = await readUpload(this, bucket, uploadId)
  const { tmpPath, size, md5 } = await writeTemp(content, opts.contentMd5)
  try {
    await fsp.writeFile(`${tmpPath}.md5`, md5)
    await fsp.rename(`${tmpPath}.md5`, path.join(dirPath, `${partNumber}.md5`))
    await fsp.rename(tmpPath, path.join(dirPath, String(partNumber)))
  } catch (err) {
    if (err.code === 'ENOENT') await readUpload(this, bucket, uploadId) // aborted meanwhile -> NoSuchUpload
    throw err
  } finally {
    await Promise.all([rmQuiet(tmpPath), rmQuiet(`${tmpPath}.md5`)])
  }
  return { size, md5 }
}

// ----------------------------------------------------------- controllers
const noSuchKey = (key) => new S3Error('NoSuchKey', 'The specified key does not exist.', { Key: key })

/** PATCH 2: preconditions of a PUT / CompleteMultipartUpload request, or undefined. */
function putConditions(ctx) {
  if (!conditional) return undefined
  const ifNoneMatch = ctx.get('if-none-match')
  const ifMatch = ctx.get('if-match')
  if (!ifNoneMatch && !ifMatch) return undefined
  if (ifNoneMatch && ifNoneMatch.trim() !== '*') {
    throw new S3Error('NotImplemented', 'A header you provided implies functionality that is not implemented', {
      Header: 'If-None-Match',
    })
  }
  return {
    ifNoneMatch: Boolean(ifNoneMatch),
    ifMatch: ifMatch ? ifMatch.split(',').map(unquote).filter(Boolean) : undefined,
  }
}

// PATCH 1+2+3: PUT Object
objectCtrl.putObject = async function putObject(ctx) {
  const cond = putConditions(ctx)
  const { body, headers } = uploadBody(ctx)
  const object = new S3Object(ctx.params.bucket, ctx.params.key, body, headers)
  const { md5 } = await ctx.store.putObject(object, { cond, contentMd5: ctx.get('content-md5') })
  ctx.etag = md5
  ctx.body = ''
}

// PATCH 1+3+7: Upload Part
objectCtrl.uploadPart = async function uploadPart(ctx) {
  const partNumber = Number(ctx.query.partNumber)
  if (!Number.isInteger(partNumber) || partNumber < 1 || partNumber > 10000) {
    throw new S3Error('InvalidArgument', 'Part number must be an integer between 1 and 10000, inclusive', {
      ArgumentName: 'partNumber',
      ArgumentValue: String(ctx.query.partNumber),
    })
  }
  const { body } = uploadBody(ctx)
  const { md5 } = await ctx.store.putPart(ctx.params.bucket, ctx.query.uploadId, partNumber, body, {
    contentMd5: ctx.get('content-md5'),
  })
  ctx.etag = md5
  ctx.body = ''
}

/** Parses an XML request body keeping every value a string (PATCH 6). */
async function xmlBody(ctx) {
  const chunks = []
  for await (const c of ctx.req) chunks.push(c)
  const xml = Buffer.concat(chunks).toString('utf8')
  if (xmlParser.validate(xml) !== true) {
    throw new S3Error(
      'MalformedXML',
      'The XML you provided was not well-formed or did not validate against our published schema.',
    )
  }
  return xmlParser.parse(xml, { parseNodeValue: false, parseAttributeValue: false, tagValueProcessor: (a) => he.decode(a) })
}
const asArray = (v) => (v === undefined || v === null ? [] : [].concat(v))
const malformed = () =>
  new S3Error('MalformedXML', 'The XML you provided was not well-formed or did not validate against our published schema.')

// PATCH 7: Complete Multipart Upload
objectCtrl.completeMultipartUpload = async function completeMultipartUpload(ctx) {
  const { bucket } = ctx.params
  const cond = putConditions(ctx)
  const upload = await readUpload(ctx.store, bucket, ctx.query.uploadId)
  const req = (await xmlBody(ctx)).CompleteMultipartUpload
  const parts = asArray(req?.Part).map((p) => ({ number: Number(p.PartNumber), etag: unquote(p.ETag ?? '') }))
  if (!parts.length) throw malformed()
  for (let i = 0; i < parts.length; i++) {
    if (!Number.isInteger(parts[i].number) || (i > 0 && parts[i].number <= parts[i - 1].number)) {
      throw new S3Error('InvalidPartOrder', 'The list of parts was not in ascending order.')
    }
  }
  const md5s = []
  for (const [i, part] of parts.entries()) {
    const partPath = path.join(upload.dirPath, String(part.number))
    const [md5, stat] = await Promise.all([
      fsp.readFile(`${partPath}.md5`, 'utf8').catch(() => undefined),
      fsp.stat(partPath).catch(() => undefined),
    ])
    if (md5 === undefined || stat === undefined || md5 !== part.etag) {
      throw new S3Error(
        'InvalidPart',
        "One or more of the specified parts could not be found. The part might not have been uploaded, or the specified entity tag might not have matched the part's entity tag.",
        { UploadId: ctx.query.uploadId, PartNumber: part.number, ETag: part.etag },
      )
    }
    if (i < parts.length - 1 && stat.size < MIN_PART_SIZE) {
      throw new S3Error('EntityTooSmall', 'Your proposed upload is smaller than the minimum allowed object size.', {
        ProposedSize: stat.size,
        MinSizeAllowed: MIN_PART_SIZE,
        PartNumber: part.number,
      })
    }
    md5s.push(Buffer.from(md5, 'hex'))
  }
  const etag = `${crypto.createHash('md5').update(Buffer.concat(md5s)).digest('hex')}-${parts.length}`
  async function* concatenated() {
    for (const part of parts) yield* fs.createReadStream(path.join(upload.dirPath, String(part.number)))
  }
  const object = new S3Object(bucket, upload.key, Readable.from(concatenated()), upload.metadata)
  await ctx.store.putObject(object, { cond, etag })
  await fsp.rm(upload.dirPath, { recursive: true, force: true })
  ctx.body = {
    CompleteMultipartUploadResult: {
      '@': { xmlns: 'http://s3.amazonaws.com/doc/2006-03-01/' },
      Location: ctx.href.split('?')[0],
      Bucket: bucket,
      Key: upload.key,
      ETag: JSON.stringify(etag),
    },
  }
}

// PATCH 7: Abort Multipart Upload (s3rver routes DELETE ?uploadId to 405)
async function abortMultipartUpload(ctx) {
  const upload = await readUpload(ctx.store, ctx.params.bucket, ctx.query.uploadId)
  await fsp.rm(upload.dirPath, { recursive: true, force: true })
  ctx.status = 204
}
{
  const layer = router.stack.find((l) => l.path === '/:bucket/:key+' && l.methods.includes('DELETE'))
  if (!layer) throw new Error('s3rver-main: cannot find the DELETE object route to patch')
  const original = layer.stack[layer.stack.length - 1]
  layer.stack[layer.stack.length - 1] = function deleteObjectOrAbort(ctx, next) {
    return ctx.params.queryMethod === 'uploadId' ? abortMultipartUpload(ctx) : original(ctx, next)
  }
}

// PATCH 4: GET / HEAD Object
/** Parses `bytes=a-b`, `bytes=a-`, `bytes=-n`: {start,end} | 'unsatisfiable' | undefined (ignored, like S3). */
function parseRange(header, size) {
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/.exec(header || '')
  if (!m || (m[1] === '' && m[2] === '')) return undefined
  if (m[1] === '') {
    const n = Number(m[2])
    if (n === 0 || size === 0) return 'unsatisfiable'
    return { start: Math.max(0, size - n), end: size - 1 }
  }
  const start = Number(m[1])
  if (m[2] !== '' && Number(m[2]) < start) return undefined
  if (start >= size) return 'unsatisfiable'
  return { start, end: m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1) }
}
const etagMatches = (header, etag) =>
  header
    .split(',')
    .map(unquote)
    .some((e) => e === '*' || e === etag)
const seconds = (d) => Math.floor(d.getTime() / 1000)

objectCtrl.getObject = async function getObject(ctx) {
  const { bucket, key } = ctx.params
  const opened = await openObject(ctx.store, bucket, key)
  if (!opened) throw noSuchKey(key)
  const { fh, metadata } = opened
  let streaming = false
  try {
    const size = Number(metadata['content-length'])
    const etag = unquote(metadata.etag)
    const lastModified = seconds(new Date(metadata['last-modified']))
    const ifMatch = ctx.get('if-match')
    const ifNoneMatch = ctx.get('if-none-match')
    const ifModifiedSince = new Date(ctx.get('if-modified-since') || NaN)
    const ifUnmodifiedSince = new Date(ctx.get('if-unmodified-since') || NaN)
    const precondition = () =>
      new S3Error('PreconditionFailed', 'At least one of the pre-conditions you specified did not hold', {
        Condition: ifMatch ? 'If-Match' : 'If-Unmodified-Since',
      })
    if (ifMatch) {
      if (!etagMatches(ifMatch, etag)) throw precondition()
    } else if (!isNaN(ifUnmodifiedSince) && lastModified > seconds(ifUnmodifiedSince)) {
      throw precondition()
    }
    const notModified = ifNoneMatch
      ? etagMatches(ifNoneMatch, etag)
      : !isNaN(ifModifiedSince) && lastModified <= seconds(ifModifiedSince)
    if (notModified) {
      ctx.status = 304
      ctx.set('ETag', metadata.etag)
      ctx.set('Last-Modified', metadata['last-modified'])
      return
    }
    const range = ctx.get('range') ? parseRange(ctx.get('range'), size) : undefined
    if (range === 'unsatisfiable') {
      ctx.set('Content-Range', `bytes */${size}`)
      throw new S3Error('InvalidRange', 'The requested range is not satisfiable', {
        RangeRequested: ctx.get('range'),
        ActualObjectSize: size,
      })
    }
    ctx.set('Accept-Ranges', 'bytes')
    for (const header of Object.keys(metadata)) ctx.set(capitalizeHeader(header), String(metadata[header]))
    if (range) {
      ctx.set('Content-Range', `bytes ${range.start}-${range.end}/${size}`)
      ctx.status = 206
    } else {
      ctx.status = 200
    }
    const start = range ? range.start : 0
    const end = range ? range.end : size - 1
    if (ctx.method === 'HEAD') {
      // no body: Koa ends HEAD responses itself, keeping Content-Length
    } else if (size === 0) {
      ctx.body = Buffer.alloc(0)
    } else {
      ctx.body = fh.createReadStream({ start, end })
      streaming = true
    }
    ctx.length = end + 1 - start
  } finally {
    if (!streaming) await fh.close()
  }
}

// PATCH 6: DeleteObjects
objectCtrl.deleteMultipleObjects = async function deleteMultipleObjects(ctx) {
  const { bucket } = ctx.params
  const req = (await xmlBody(ctx)).Delete
  const objects = asArray(req?.Object)
  if (!objects.length || objects.length > 1000) throw malformed()
  const quiet = String(req.Quiet).trim() === 'true'
  const results = await Promise.all(
    objects.map(async (o) => {
      const key = String(o.Key ?? '')
      try {
        await ctx.store.deleteObject(bucket, key)
        return { Key: key }
      } catch (err) {
        return { error: { Key: key, Code: 'InternalError', Message: String(err.message) } }
      }
    }),
  )
  ctx.body = {
    DeleteResult: {
      '@': { xmlns: 'http://s3.amazonaws.com/doc/2006-03-01/' },
      Deleted: quiet ? [] : results.filter((r) => !r.error),
      Error: results.filter((r) => r.error).map((r) => r.error),
    },
  }
}

// PATCH 5: ListObjects / ListObjectsV2
/** All keys starting with `prefix`, in UTF-8 byte order. */
async function listKeys(st, bucket, prefix) {
  const bucketPath = st.getBucketPath(bucket)
  const dirSegments = prefix.split('/').slice(0, -1) // directories the prefix fully names
  const keys = []
  async function walk(rel) {
    let entries
    try {
      entries = await fsp.readdir(path.join(bucketPath, ...rel), { withFileTypes: true })
    } catch (err) {
      if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return
      throw err
    }
    for (const e of entries) {
      if (e.isDirectory()) {
        if (rel.length === 0 && e.name === UPLOADS_DIR) continue
        await walk([...rel, e.name])
      } else if (e.name.endsWith(OBJECT_SUFFIX)) {
        const key = FilesystemStore.decodeKeyPath([...rel, e.name.slice(0, -OBJECT_SUFFIX.length)].join('/'))
        if (key.startsWith(prefix)) keys.push(key)
      }
    }
  }
  await walk(dirSegments.length ? FilesystemStore.encodeKeyPath(dirSegments.join('/')).split('/') : [])
  return keys.sort(compareUtf8)
}

const encodeToken = (after) => Buffer.from(JSON.stringify({ a: after })).toString('base64url')
function decodeToken(token) {
  try {
    const { a } = JSON.parse(Buffer.from(token, 'base64url').toString('utf8'))
    if (typeof a === 'string') return a
  } catch {}
  throw new S3Error('InvalidArgument', 'The continuation token provided is incorrect', {
    ArgumentName: 'continuation-token',
  })
}

bucketCtrl.getBucket = async function getBucket(ctx) {
  const q = ctx.query
  const v2 = q['list-type'] === '2'
  const prefix = q.prefix || ''
  const delimiter = q.delimiter || ''
  let maxKeys = 1000
  if (q['max-keys'] !== undefined) {
    if (!/^\d+$/.test(q['max-keys']) || Number(q['max-keys']) > 2147483647) {
      throw new S3Error('InvalidArgument', 'Provided max-keys not an integer or within integer range', {
        ArgumentName: 'max-keys',
        ArgumentValue: q['max-keys'],
      })
    }
    maxKeys = Math.min(1000, Number(q['max-keys']))
  }
  let after
  if (v2) {
    if ('marker' in q) {
      throw new S3Error('InvalidArgument', 'Marker unsupported with REST.GET.BUCKET in list-type=2', {
        ArgumentName: 'marker',
      })
    }
    after = q['continuation-token'] ? decodeToken(q['continuation-token']) : q['start-after'] || ''
  } else {
    after = q.marker || ''
  }

  const keys = await listKeys(ctx.store, ctx.params.bucket, prefix)
  const contents = []
  const commonPrefixes = []
  let last
  let truncated = false
  let lastPrefix
  for (const key of keys) {
    if (compareUtf8(key, after) <= 0) continue
    let cp
    if (delimiter) {
      const j = key.indexOf(delimiter, prefix.length)
      if (j >= 0) cp = key.slice(0, j + delimiter.length)
    }
    // a common prefix at or before the marker was returned on an earlier page
    if (cp !== undefined && (cp === lastPrefix || compareUtf8(cp, after) <= 0)) continue
    if (contents.length + commonPrefixes.length >= maxKeys) {
      truncated = true
      break
    }
    if (cp !== undefined) {
      commonPrefixes.push(cp)
      lastPrefix = last = cp
    } else {
      contents.push(key)
      last = key
    }
  }
  const metadata = await Promise.all(
    contents.map((key) =>
      ctx.store.getMetadata(ctx.params.bucket, key).catch((err) => {
        if (err.code === 'ENOENT') return undefined // deleted meanwhile
        throw err
      }),
    ),
  )
  const entries = contents
    .map((key, i) => metadata[i] && { key, metadata: metadata[i] })
    .filter(Boolean)
    .map(({ key, metadata: m }) => ({
      Key: key,
      LastModified: new Date(m['last-modified']).toISOString(),
      ETag: m.etag,
      Size: Number(m['content-length']),
      Owner:
        !v2 || q['fetch-owner'] === 'true'
          ? { ID: DUMMY_ACCOUNT.id, DisplayName: DUMMY_ACCOUNT.displayName }
          : undefined,
      StorageClass: 'STANDARD',
    }))
  ctx.body = {
    ListBucketResult: {
      '@': { xmlns: 'http://s3.amazonaws.com/doc/2006-03-01/' },
      Name: ctx.params.bucket,
      Prefix: prefix,
      ...(v2
        ? {
            StartAfter: q['continuation-token'] ? undefined : q['start-after'] || undefined,
            ContinuationToken: q['continuation-token'] || undefined,
            NextContinuationToken: truncated ? encodeToken(last) : undefined,
            KeyCount: contents.length + commonPrefixes.length,
          }
        : {
            Marker: after,
            NextMarker: truncated && delimiter ? last : undefined,
          }),
      MaxKeys: maxKeys,
      Delimiter: delimiter || undefined,
      IsTruncated: truncated,
      Contents: entries,
      CommonPrefixes: commonPrefixes.map((p) => ({ Prefix: p })),
    },
  }
}

// ------------------------------------------------------------------ start
const server = new S3rver({
  address: '127.0.0.1',
  port,
  silent: true,
  directory: DATA,
  vhostBuckets: false,
  configureBuckets: [{ name: BUCKET }],
})
// Koa emits 'error' for every failed request; report only server faults.
server.on('error', (err) => {
  if (!(err.status < 500)) process.stderr.write(`s3rver-main: ${err.stack || err}\n`)
})
const address = await server.run()
// Keep idle keep-alive sockets open longer than clients do, so a client
// never writes into a socket the server is just closing (ECONNRESET).
server.httpServer.keepAliveTimeout = 120_000
server.httpServer.headersTimeout = 121_000
process.stdout.write(`${JSON.stringify({ port: address.port })}\n`)

let stopping = false
function stop(code = 0) {
  if (stopping) return
  stopping = true
  const exit = () => {
    if (removeDir) fs.rmSync(dir, { recursive: true, force: true })
    process.exit(code)
  }
  server.httpServer.close(exit)
  server.httpServer.closeAllConnections()
  setTimeout(exit, 2000).unref()
}
process.on('SIGTERM', () => stop(0))
process.on('SIGINT', () => stop(0))
if (watchStdin) {
  process.stdin.on('end', () => stop(0))
  process.stdin.on('error', () => stop(0))
  process.stdin.resume()
}
