import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { inject } from 'vitest'
import { FileStore, MemoryStore, S3Store, type ObjectStore } from '../../src/store/index.js'

import type { S3ServerInfo } from '../servers/servers.js'
export type { S3ServerInfo }

/** The S3 servers started by the global setup (s3rver, Ceph RGW, and any external one). */
export function s3Servers(): S3ServerInfo[] {
  return (inject('s3Servers') as S3ServerInfo[] | undefined) ?? []
}

/** A repository URL on an S3 server with a fresh prefix, and credentials in env form. */
export function s3Url(server: S3ServerInfo, prefix = freshPrefix(server)): string {
  return `s3://${server.bucket}/${prefix}?endpoint=${encodeURIComponent(server.endpoint)}&region=${server.region}`
}

export function s3Credentials(server: S3ServerInfo) {
  return { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey }
}

/** A prefix no other test uses (under the external server's own prefix, if it has one). */
export function freshPrefix(server: S3ServerInfo): string {
  const own = `t-${randomBytes(6).toString('hex')}`
  return server.prefix ? `${server.prefix.replace(/\/+$/, '')}/${own}` : own
}

export function newS3Store(server: S3ServerInfo, prefix?: string): S3Store {
  return new S3Store({
    bucket: server.bucket,
    prefix: prefix ?? freshPrefix(server),
    endpoint: server.endpoint,
    region: server.region,
    credentials: s3Credentials(server),
    conditionalWrites: server.conditionalWrites,
  })
}

export function tempDir(label = 's0fs'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(path.join(tmpdir(), `${label}-`))
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) }
}

/** Every backend the conformance suite covers, each as a factory for a fresh, empty store. */
export function storeFactories(): { name: string; atomic: boolean; make: () => { store: ObjectStore; cleanup: () => void } }[] {
  const list: { name: string; atomic: boolean; make: () => { store: ObjectStore; cleanup: () => void } }[] = [
    {
      name: 'memory',
      atomic: true,
      make: () => {
        const name = `conf-${randomBytes(6).toString('hex')}`
        return { store: new MemoryStore(name), cleanup: () => MemoryStore.reset(name) }
      },
    },
    {
      name: 'file',
      atomic: true,
      make: () => {
        const t = tempDir('s0fs-store')
        return { store: new FileStore(t.dir), cleanup: t.cleanup }
      },
    },
  ]
  for (const server of s3Servers()) {
    list.push({
      name: `s3:${server.name}`,
      atomic: server.conditionalWrites,
      make: () => {
        const store = newS3Store(server)
        return { store, cleanup: () => void store.close() }
      },
    })
  }
  return list
}
