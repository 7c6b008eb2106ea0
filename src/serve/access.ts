import { openFiles } from '../cli/volume-access.js'
import { Mutex } from '../fs/mutex.js'
import { controlRequest } from '../mount/control.js'
import type { FileTree, Repository } from '../repo/index.js'

/**
 * How the HTTP server reaches volumes. Reads open the volume (or snapshot)
 * at its last commit. A write goes through the volume's mount daemon when it
 * is mounted on this node; otherwise the server takes the volume's lease for
 * that one request and gives it back at once, so it never keeps a mount or
 * the CLI out. Either way the change is committed to the bucket before the
 * request is answered. Writes to one volume are queued, not refused.
 */
export class VolumeAccess {
  private readonly queues = new Map<string, Mutex>()

  constructor(
    private readonly repo: Repository,
    private readonly portalDir: string,
  ) {}

  async read<T>(name: string, fn: (files: FileTree) => Promise<T>): Promise<T> {
    const opened = await openFiles(this.repo, name, { write: false, purpose: 's0fs serve' })
    try {
      return await fn(opened.files)
    } finally {
      await opened.close()
    }
  }

  /** Runs `fn` with write access; its changes are in the bucket when this returns. */
  async write<T>(name: string, fn: (files: FileTree) => Promise<T>): Promise<T> {
    let queue = this.queues.get(name)
    if (!queue) this.queues.set(name, (queue = new Mutex()))
    try {
      return await queue.run(() => this.writeNow(name, fn))
    } finally {
      if (!queue.locked) this.queues.delete(name)
    }
  }

  private async writeNow<T>(name: string, fn: (files: FileTree) => Promise<T>): Promise<T> {
    const opened = await openFiles(this.repo, name, { write: true, purpose: 's0fs serve' })
    try {
      const result = await fn(opened.files)
      if (opened.mountSocket) await controlRequest(opened.mountSocket, { op: 'commit' })
      return result
    } finally {
      // A direct writer commits here — also what a failed request managed to change, like an interrupted cp.
      await opened.close()
    }
  }
}
