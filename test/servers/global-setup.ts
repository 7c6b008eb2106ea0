/**
 * vitest globalSetup: one patched s3rver and one Ceph RGW for the whole run.
 * Tests read the descriptors with `inject('s3Servers')` (every server
 * available), or `inject('s3rver')`, `inject('ceph')`, `inject('externalS3')`.
 *
 * S0FS_TEST_NO_CEPH=1 skips Ceph (quick local iterations only; CI never sets
 * it). S0FS_TEST_S3_URL=s3://bucket/prefix?endpoint=http://host:port (with
 * AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) adds an external S3.
 */
import type { TestProject } from 'vitest/node'
import { externalS3FromEnv, serverInfo, startCephRgw, startS3rver, type S3ServerInfo, type S3TestServer } from './servers.js'

declare module 'vitest' {
  export interface ProvidedContext {
    /** Every server of this run: s3rver, then ceph (unless skipped), then the external one (if set). */
    s3Servers: S3ServerInfo[]
    s3rver: S3ServerInfo
    /** null only when S0FS_TEST_NO_CEPH=1. */
    ceph: S3ServerInfo | null
    /** null unless S0FS_TEST_S3_URL is set. */
    externalS3: S3ServerInfo | null
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const skipCeph = process.env.S0FS_TEST_NO_CEPH === '1'
  const external = externalS3FromEnv()
  const results = await Promise.allSettled([
    startS3rver({ conditional: true }),
    skipCeph ? Promise.resolve(null) : startCephRgw(),
  ])
  const started = results.flatMap((r) => (r.status === 'fulfilled' && r.value ? [r.value] : []))
  const stopAll = async () => {
    await Promise.allSettled(started.map((s) => s.stop()))
  }
  const failure = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
  if (failure) {
    await stopAll()
    throw failure.reason
  }
  const [s3rver, ceph] = results.map((r) => (r as PromiseFulfilledResult<S3TestServer | null>).value)
  if (skipCeph) console.warn('[global-setup] S0FS_TEST_NO_CEPH=1: Ceph RGW not started')

  project.provide('s3rver', serverInfo(s3rver!))
  project.provide('ceph', ceph ? serverInfo(ceph) : null)
  project.provide('externalS3', external ? serverInfo(external) : null)
  project.provide(
    's3Servers',
    [s3rver, ceph, external].flatMap((s) => (s ? [serverInfo(s)] : [])),
  )
  return stopAll
}
