import { FsError } from '../fs/index.js'
import type { FileTree } from '../repo/files.js'
import { ByteQueue } from '../util/byte-queue.js'
import { ControlError, MAX_CONTROL_PAYLOAD, type ControlRequest, type ControlResult, type ControlSession } from './control.js'

/**
 * The daemon's side of file access through the control socket (`s0fs put`,
 * `get`, `ls` … on a volume this daemon holds the lease of). Every op names
 * a path inside the volume; the daemon resolves it in its own tree, so
 * nothing outside the volume is ever reachable. RemoteFiles is the client.
 */

function str(req: ControlRequest, field: string): string {
  const v = req[field]
  if (typeof v !== 'string') throw new ControlError(`${req.op} needs a string "${field}"`, 'EINVAL')
  return v
}

function num(req: ControlRequest, field: string): number | undefined {
  const v = req[field]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new ControlError(`${req.op}: "${field}" must be a non-negative integer`, 'EINVAL')
  return v
}

/** About how much of a directory listing one fs.list reply carries (under MAX_CONTROL_PAYLOAD). */
const LIST_PAGE_BYTES = 1024 * 1024

interface OpenWrite {
  queue: ByteQueue
  done: Promise<unknown>
}

export interface FileServiceOptions {
  /**
   * False on a --writeback-cache mount: the kernel keeps the size and times
   * of files it has cached and would not see them change, so existing files
   * are not rewritten around it (new files are fine).
   */
  rewriteExisting?: boolean
}

export async function serveFileOp(
  files: FileTree,
  req: ControlRequest,
  payload: Buffer,
  session: ControlSession,
  options: FileServiceOptions = {},
): Promise<ControlResult> {
  switch (req.op) {
    case 'fs.stat':
      return { stat: await files.stat(str(req, 'path'), { follow: req.follow === true }) }
    case 'fs.list': {
      const entries = await files.list(str(req, 'path'))
      if (req.paged !== true) return { entries } // a client from before paging (one header line, up to 1 MiB)
      // Entries go in the payload, a page at a time, after the name the last page ended with: the listing is
      // sorted by name, so names created or removed between pages can neither shift nor repeat the rest.
      const after = typeof req.after === 'string' ? req.after : undefined
      let at = after === undefined ? 0 : entries.findIndex((e) => e.name > after)
      if (at < 0) at = entries.length
      const page: string[] = []
      let bytes = 2
      for (; at < entries.length; at++) {
        const text = JSON.stringify(entries[at])
        const size = Buffer.byteLength(text) + 1
        if (page.length > 0 && bytes + size > LIST_PAGE_BYTES) break
        page.push(text)
        bytes += size
      }
      return { more: at < entries.length, payload: Buffer.from(`[${page.join(',')}]`) }
    }
    case 'fs.readlink':
      return { target: await files.readlink(str(req, 'path')) }
    case 'fs.read': {
      const length = Math.min(num(req, 'length') ?? MAX_CONTROL_PAYLOAD, MAX_CONTROL_PAYLOAD)
      const parts: Buffer[] = []
      for await (const piece of files.read(str(req, 'path'), { offset: num(req, 'offset') ?? 0, length })) parts.push(piece)
      return { payload: Buffer.concat(parts) }
    }
    case 'fs.mkdir':
      return { stat: await files.mkdir(str(req, 'path'), { parents: req.parents === true, mode: num(req, 'mode') }) }
    case 'fs.symlink':
      return { stat: await files.symlink(str(req, 'path'), str(req, 'target')) }
    case 'fs.remove':
      return { removed: await files.remove(str(req, 'path'), { recursive: req.recursive === true }) }
    case 'fs.link':
      return { stat: await files.link(str(req, 'path'), str(req, 'existing')) }
    case 'fs.setattr':
      return {
        stat: await files.setAttributes(str(req, 'path'), {
          mode: num(req, 'mode'),
          uid: num(req, 'uid'),
          gid: num(req, 'gid'),
          mtime: typeof req.mtime === 'string' ? new Date(req.mtime) : undefined,
        }),
      }
    case 'fs.move':
      await files.move(str(req, 'from'), str(req, 'to'))
      return {}
    case 'fs.write.open': {
      if (session.state.has('write')) throw new ControlError('a write is already open on this connection', 'EBUSY')
      const queue = new ByteQueue()
      const mtime = typeof req.mtime === 'string' ? new Date(req.mtime) : undefined
      const path = str(req, 'path')
      const exclusive = req.exclusive === true
      const replace = req.replace === true
      // A replacement is a new inode: the kernel drops the old one's cached size with its name.
      const rewriteRefused = options.rewriteExisting === false && !exclusive && !replace
      const done = files.write(path, queue, { mode: num(req, 'mode'), exclusive: exclusive || rewriteRefused, replace, mtime }).catch((err: unknown) => {
        if (rewriteRefused && err instanceof FsError && err.code === 'EEXIST') {
          throw new FsError(
            'EBUSY',
            `${path} exists, and this volume is mounted with --writeback-cache (the kernel owns the size of files it caches): overwrite it through the mountpoint, or remount without --writeback-cache`,
          )
        }
        throw err
      })
      done.catch(() => undefined)
      session.state.set('write', { queue, done } satisfies OpenWrite)
      // The client went away mid-file: stop the write (a new file is dropped; a rewritten one keeps what arrived, like an interrupted cp).
      session.onClose(() => queue.abort(new FsError('EIO', 'the writer disconnected')))
      return {}
    }
    case 'fs.write.data': {
      const open = session.state.get('write') as OpenWrite | undefined
      if (!open) throw new ControlError('no write is open on this connection', 'EINVAL')
      // Either the chunk is taken, or the write failed (then report that failure).
      await Promise.race([open.queue.push(payload), open.done])
      return {}
    }
    case 'fs.write.close': {
      const open = session.state.get('write') as OpenWrite | undefined
      if (!open) throw new ControlError('no write is open on this connection', 'EINVAL')
      session.state.delete('write')
      open.queue.end()
      return { stat: await open.done }
    }
    default:
      throw new ControlError(`unknown control op ${JSON.stringify(req.op)}`, 'EINVAL')
  }
}
