import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
// The package itself, through package.json "exports" (built by npm test), as a user imports it.
import { FsError, Repository, RefExistsError } from 's0fs'

/** The library API used the way the README shows it. */
describe('library API (import { Repository } from "s0fs")', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 's0fs-lib-'))
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  it('creates, writes, snapshots, diffs and forks without a mount', async () => {
    const credential = { kind: 'passphrase' as const, passphrase: 'hunter2' }
    const url = `file://${dir}/repo`
    await (await Repository.init(url, credential)).close()

    const repo = await Repository.open(url, credential)
    await repo.createVolume('agent-42')
    const session = await repo.openVolume('agent-42', { portalDir: path.join(dir, 'portal') })
    const files = session.files()
    await files.mkdir('/docs', { parents: true })
    await files.write('/docs/notes.md', Buffer.from('hello'))
    await session.close()
    await repo.createSnapshot('agent-42', 'first')

    const again = await repo.openVolume('agent-42', { portalDir: path.join(dir, 'portal') })
    await again.files().write('/docs/notes.md', Buffer.from('hello, world'))
    await again.close()

    expect(await repo.diff('first', 'agent-42')).toEqual({ added: [], removed: [], modified: [{ path: '/docs/notes.md', type: 'file' }] })
    const fork = await repo.fork('first', 'agent-42-try2')
    expect(fork.origin).toMatchObject({ kind: 'snapshot', name: 'first' })
    const reader = await repo.openVolume('agent-42-try2', { portalDir: path.join(dir, 'portal'), readOnly: true })
    const chunks: Buffer[] = []
    for await (const c of reader.files().read('/docs/notes.md')) chunks.push(c)
    expect(Buffer.concat(chunks).toString()).toBe('hello')
    await expect(reader.files().stat('/nope')).rejects.toBeInstanceOf(FsError)
    await expect(repo.createVolume('agent-42')).rejects.toBeInstanceOf(RefExistsError)
    expect((await repo.listVolumes()).map((v) => v.name).sort()).toEqual(['agent-42', 'agent-42-try2'])
    await repo.close()
  }, 60_000)
})
