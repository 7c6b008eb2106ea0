/**
 * Metadata benchmark (issue #3): at 10k and 100k files on a file:// repository,
 * snapshot and fork latency, pages written by a commit that changes 10 files,
 * and a cold open of the volume up to its first lookup. Each size runs in a
 * process of its own, started as a mount daemon is (same V8 and allocator
 * settings), so its peak RSS (the kernel's high-water mark) is the daemon's.
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { createKeyFile } from '../src/crypto/index.js'
import { ROOT, ROOT_INO } from '../src/fs/index.js'
import { DAEMON_ENV, DAEMON_NODE_FLAGS } from '../src/mount/runtime.js'
import { Repository } from '../src/repo/index.js'
import { peakRssBytes } from '../src/util/process.js'

export interface MetaResult {
  files: number
  create_files_per_s: number
  commit_all_ms: number
  snapshot_ms: number
  fork_ms: number
  commit_10_changes_pages: number
  commit_10_changes_ms: number
  tree_pages_total: number
  cold_open_first_lookup_ms: number
  peak_rss_mib: number
}

const b = (s: string) => Buffer.from(s)

/**
 * `keep`: leave the largest size's repository in this directory (key file
 * `key`, volume `vol`, files `dirD/file-I.txt`) for a mount-time measurement.
 */
export async function runMeta(log: (line: string) => void, sizes = [10_000, 100_000], keep?: string): Promise<MetaResult[]> {
  const results: MetaResult[] = []
  for (const files of sizes) {
    const r = await measureInChild(files, files === Math.max(...sizes) ? keep : undefined)
    results.push(r)
    log(
      `${String(files).padStart(7)} files: create ${r.create_files_per_s}/s, snapshot ${r.snapshot_ms} ms, fork ${r.fork_ms} ms, ` +
        `commit of 10 changes ${r.commit_10_changes_pages} pages (of ${r.tree_pages_total}) in ${r.commit_10_changes_ms} ms, ` +
        `cold open to first lookup ${r.cold_open_first_lookup_ms} ms, peak RSS ${r.peak_rss_mib} MiB`,
    )
  }
  return results
}

async function measureInChild(files: number, keep?: string): Promise<MetaResult> {
  const args = [...DAEMON_NODE_FLAGS, fileURLToPath(import.meta.url), MEASURE_FLAG, String(files), ...(keep ? [keep] : [])]
  const child = spawn(process.execPath, args, {
    env: { ...process.env, ...DAEMON_ENV },
    stdio: ['ignore', 'pipe', 'inherit'],
  })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve))
  if (code !== 0) throw new Error(`meta benchmark at ${files} files failed (exit ${code})`)
  return JSON.parse(out) as MetaResult
}

const MEASURE_FLAG = '--measure-files'

if (process.argv[2] === MEASURE_FLAG) {
  const keep = process.argv[4]
  const dir = keep ?? mkdtempSync(path.join(tmpdir(), 's0fs-bench-meta-'))
  try {
    process.stdout.write(JSON.stringify(await measure(Number(process.argv[3]), dir)))
  } finally {
    if (!keep) rmSync(dir, { recursive: true, force: true })
  }
}

async function measure(files: number, dir: string): Promise<MetaResult> {
  const url = `file://${path.join(dir, 'repo')}`
  const credential = { kind: 'keyfile' as const, key: await createKeyFile(path.join(dir, 'key')) }
  const portalDir = path.join(dir, 'portal')
  const repo = await Repository.init(url, credential)
  await repo.createVolume('vol')
  const session = await repo.openVolume('vol', { portalDir })
  const dirs: number[] = []
  const t0 = performance.now()
  for (let d = 0; d < 100; d++) dirs.push((await session.fs.mkdir(ROOT, ROOT_INO, b(`dir${d}`), 0o755)).ino)
  const inos: number[] = []
  for (let i = 0; i < files; i++) {
    const f = await session.fs.create(ROOT, dirs[i % 100], b(`file-${i}.txt`), 0o644)
    await session.fs.write(ROOT, f.ino, 0, b(`content of file ${i}\n`))
    inos.push(f.ino)
    // Commit as the mount does: every few seconds (here: every 10k files), or sooner under metadata pressure.
    if (i % 10_000 === 9_999 || session.metadataPressure) await session.commit()
  }
  const createSeconds = (performance.now() - t0) / 1000
  const t1 = performance.now()
  await session.commit()
  const commitAllMs = performance.now() - t1

  // Snapshot and fork are pointer copies: time them on the committed volume.
  const t2 = performance.now()
  await repo.createSnapshot('vol', 'snap')
  const snapshotMs = performance.now() - t2
  const t3 = performance.now()
  await repo.fork('snap', 'forked')
  const forkMs = performance.now() - t3

  for (let i = 0; i < 10; i++) {
    const ino = inos[Math.floor((i * inos.length) / 10)]
    await session.fs.write(ROOT, ino, 0, b(`changed ${i}\n`))
  }
  const t4 = performance.now()
  const commit = await session.commit()
  const commit10Ms = performance.now() - t4
  await session.close()

  // Count the tree's pages (all of them, from the persisted root).
  const head = (await repo.refs.requireVolume('vol')).head
  const totalPages = await countPages(repo, head.root)
  await repo.close()

  // Cold open: a new repository object (empty caches), open the volume, look one file up.
  const t5 = performance.now()
  const cold = await Repository.open(url, credential)
  const ro = await cold.openVolume('vol', { portalDir, readOnly: true })
  const dirIno = (await ro.fs.lookup(ROOT, ROOT_INO, b('dir42'))).ino
  await ro.fs.lookup(ROOT, dirIno, b(`file-${42 + 100 * 7}.txt`))
  const coldMs = performance.now() - t5
  await cold.close()

  return {
    files,
    create_files_per_s: Math.round(files / createSeconds),
    commit_all_ms: Math.round(commitAllMs),
    snapshot_ms: round1(snapshotMs),
    fork_ms: round1(forkMs),
    commit_10_changes_pages: commit?.pages ?? 0,
    commit_10_changes_ms: Math.round(commit10Ms),
    tree_pages_total: totalPages,
    cold_open_first_lookup_ms: round1(coldMs),
    peak_rss_mib: Math.round(peakRssBytes() / 1024 / 1024),
  }
}

async function countPages(repo: Repository, root: import('../src/meta/index.js').PageRef | null): Promise<number> {
  if (!root) return 0
  let n = 0
  const visit = async (ref: import('../src/meta/index.js').PageRef): Promise<void> => {
    n++
    const node = await repo.pages.load(ref)
    if (!node.leaf) for (const c of node.children) await visit(c as import('../src/meta/index.js').PageRef)
  }
  await visit(root)
  return n
}

function round1(x: number): number {
  return Math.round(x * 10) / 10
}
