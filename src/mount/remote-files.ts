import { Errno, FsError, type ErrnoName } from '../fs/index.js'
import type { FileAttributes, FileStat, FileTree, ReadRange, WriteOptions } from '../repo/files.js'
import { ControlClient, ControlError, MAX_CONTROL_PAYLOAD, type ControlRequest } from './control.js'

const READ_PIECE = 4 * 1024 * 1024

/**
 * A FileTree served by a mount daemon over its control socket: how the CLI
 * changes a volume that is mounted (and leased) on this node. The daemon
 * applies each change to its own tree and tells the kernel to drop what it
 * cached, so processes using the mount see the change at once.
 */
export class RemoteFiles implements FileTree {
  readonly writable = true
  private readonly client: ControlClient

  constructor(socketPath: string) {
    this.client = new ControlClient(socketPath)
  }

  async stat(path: string, options: { follow?: boolean } = {}): Promise<FileStat> {
    return (await this.call({ op: 'fs.stat', path, follow: options.follow })).fields.stat as FileStat
  }

  async list(path: string): Promise<FileStat[]> {
    const entries: FileStat[] = []
    for (let after: string | undefined; ; ) {
      const reply = await this.call({ op: 'fs.list', path, paged: true, after })
      // A daemon from before paging answers with the whole listing in the header.
      if (Array.isArray(reply.fields.entries)) return reply.fields.entries as FileStat[]
      const page = JSON.parse(reply.payload.toString('utf8')) as FileStat[]
      for (const e of page) entries.push(e)
      if (reply.fields.more !== true || page.length === 0) return entries
      after = page[page.length - 1].name
    }
  }

  async readlink(path: string): Promise<string> {
    return (await this.call({ op: 'fs.readlink', path })).fields.target as string
  }

  async *read(path: string, range: ReadRange = {}): AsyncIterable<Buffer> {
    let offset = range.offset ?? 0
    let left = range.length ?? Number.MAX_SAFE_INTEGER
    while (left > 0) {
      const { payload } = await this.call({ op: 'fs.read', path, offset, length: Math.min(READ_PIECE, left) })
      if (payload.length === 0) return
      offset += payload.length
      left -= payload.length
      yield payload
    }
  }

  async write(path: string, data: AsyncIterable<Uint8Array> | Uint8Array, options: WriteOptions = {}): Promise<FileStat> {
    await this.call({ op: 'fs.write.open', path, mode: options.mode, exclusive: options.exclusive, replace: options.replace, mtime: options.mtime?.toISOString() })
    const source: Iterable<Uint8Array> | AsyncIterable<Uint8Array> = data instanceof Uint8Array ? [data] : data
    for await (const chunk of source) {
      for (let at = 0; at < chunk.length; at += MAX_CONTROL_PAYLOAD) {
        const piece = Buffer.from(chunk.buffer, chunk.byteOffset + at, Math.min(MAX_CONTROL_PAYLOAD, chunk.length - at))
        await this.call({ op: 'fs.write.data' }, piece)
      }
    }
    return (await this.call({ op: 'fs.write.close' })).fields.stat as FileStat
  }

  async mkdir(path: string, options: { parents?: boolean; mode?: number } = {}): Promise<FileStat> {
    return (await this.call({ op: 'fs.mkdir', path, parents: options.parents, mode: options.mode })).fields.stat as FileStat
  }

  async symlink(path: string, target: string): Promise<FileStat> {
    return (await this.call({ op: 'fs.symlink', path, target })).fields.stat as FileStat
  }

  async remove(path: string, options: { recursive?: boolean } = {}): Promise<number> {
    return (await this.call({ op: 'fs.remove', path, recursive: options.recursive })).fields.removed as number
  }

  async move(from: string, to: string): Promise<void> {
    await this.call({ op: 'fs.move', from, to })
  }

  async link(path: string, existing: string): Promise<FileStat> {
    return (await this.call({ op: 'fs.link', path, existing })).fields.stat as FileStat
  }

  async setAttributes(path: string, attrs: FileAttributes): Promise<FileStat> {
    return (await this.call({ op: 'fs.setattr', path, mode: attrs.mode, uid: attrs.uid, gid: attrs.gid, mtime: attrs.mtime?.toISOString() })).fields.stat as FileStat
  }

  close(): void {
    this.client.close()
  }

  /** One request; the daemon's POSIX errors come back as FsError with the same code. */
  private async call(req: ControlRequest, payload?: Buffer): Promise<{ fields: Record<string, unknown>; payload: Buffer }> {
    try {
      return await this.client.request(req, payload)
    } catch (err) {
      if (err instanceof ControlError && err.code && err.code in Errno) {
        const prefix = `${err.code}: `
        throw new FsError(err.code as ErrnoName, err.message.startsWith(prefix) ? err.message.slice(prefix.length) : undefined)
      }
      throw err
    }
  }
}
