import type { FileTree } from '../../repo/index.js'
import type { CommandContext } from '../command.js'
import { openFiles, type OpenedFiles } from '../volume-access.js'
import { openRepo } from './repo.js'

/** Opens the repository and the volume, runs `fn`, then commits and closes. */
export async function withFiles<T>(ctx: CommandContext, name: string, write: boolean, fn: (files: FileTree, opened: OpenedFiles) => Promise<T>): Promise<T> {
  const repo = await openRepo(ctx)
  try {
    const opened = await openFiles(repo, name, { write, purpose: `s0fs ${ctx.command} (pid ${process.pid})` })
    try {
      return await fn(opened.files, opened)
    } finally {
      await opened.close()
    }
  } finally {
    await repo.close()
  }
}
