import { randomBytes } from 'node:crypto'
import { Repository } from '../../src/repo/index.js'
import { MemoryStore } from '../../src/store/index.js'
import { tempDir } from './stores.js'

export const TEST_PASSPHRASE = { kind: 'passphrase' as const, passphrase: 'test passphrase' }

/** A fresh repository on a new memory store (or the given URL), plus a portal directory. */
export async function testRepo(url?: string, options: { s3Credentials?: { accessKeyId: string; secretAccessKey: string }; formatVersion?: number } = {}) {
  const name = `repo-${randomBytes(4).toString('hex')}`
  const repoUrl = url ?? `memory://${name}`
  // Argon2id at full strength costs ~0.4 s per open; a key file keeps tests quick.
  const credential = { kind: 'keyfile' as const, key: randomBytes(32) }
  const repo = await Repository.init(repoUrl, credential, options)
  const portal = tempDir('s0fs-portal')
  return {
    repo,
    url: repoUrl,
    credential,
    portalDir: portal.dir,
    reopen: () => Repository.open(repoUrl, credential, options),
    cleanup: async () => {
      await repo.close()
      portal.cleanup()
      if (!url) MemoryStore.reset(name)
    },
  }
}
