import { FsError } from '../fs/index.js'
import { NAME_MAX, PATH_MAX } from '../fs/index.js'

/**
 * Paths inside a volume, as the CLI, the library and the HTTP API take them:
 * always relative to the volume's root, whatever the caller writes.
 *
 * A caller's ".." that would climb above the root is refused (never clamped),
 * so a typo or an attack is an error instead of a surprise. Symbolic links
 * met on the way are followed as if the volume root were "/" (chroot
 * semantics): a link's absolute target, or its ".." at the root, stays inside
 * the volume. Resolution never leaves the volume, because it only ever looks
 * names up in the volume's own tree.
 */

const MAX_SYMLINK_HOPS = 40

/** The components of `path` after lexical clean-up ("", "." dropped; ".." applied); [] is the root. */
export function volumePathComponents(path: string): string[] {
  if (typeof path !== 'string') throw new FsError('EINVAL', 'a path must be a string')
  if (path.includes('\0')) throw new FsError('EINVAL', `path ${JSON.stringify(path)} contains a NUL byte`)
  if (Buffer.byteLength(path) >= PATH_MAX) throw new FsError('ENAMETOOLONG', `path is ${Buffer.byteLength(path)} bytes; the limit is ${PATH_MAX - 1}`)
  const out: string[] = []
  for (const part of path.split('/')) {
    if (part === '' || part === '.') continue
    if (part === '..') {
      if (out.length === 0) throw new FsError('EINVAL', `path ${JSON.stringify(path)} escapes the volume root`)
      out.pop()
      continue
    }
    if (Buffer.byteLength(part) > NAME_MAX) throw new FsError('ENAMETOOLONG', `name ${JSON.stringify(part.slice(0, 40) + '…')} is ${Buffer.byteLength(part)} bytes; the limit is ${NAME_MAX}`)
    out.push(part)
  }
  return out
}

/** Whether the clean volume path `inner` is `outer` or below it. */
export function volumePathWithin(inner: string, outer: string): boolean {
  return inner === outer || outer === '/' || inner.startsWith(`${outer}/`)
}

/** "/a/b" for ["a", "b"]; "/" for the root. */
export function joinVolumePath(components: readonly string[]): string {
  return '/' + components.join('/')
}

/** The clean, absolute form of a volume path ("a//b/../c" → "/a/c"). */
export function normalizeVolumePath(path: string): string {
  return joinVolumePath(volumePathComponents(path))
}

/**
 * Expands symbolic links along a path. `readSymlink(components)` returns the
 * target when the path so far names a symlink, else undefined (also when it
 * does not exist: the caller's next step reports that). With `followLast`
 * false the final component is kept as it is (lstat, unlink, rename).
 */
export async function resolveSymlinks(
  components: readonly string[],
  readSymlink: (components: readonly string[]) => Promise<string | undefined>,
  followLast: boolean,
): Promise<string[]> {
  const pending = [...components]
  const done: string[] = []
  let hops = 0
  while (pending.length > 0) {
    const name = pending.shift()!
    if (name === '' || name === '.') continue
    if (name === '..') {
      done.pop() // at the root, ".." is the root
      continue
    }
    done.push(name)
    if (pending.length === 0 && !followLast) break
    const target = await readSymlink(done)
    if (target === undefined) continue
    if (++hops > MAX_SYMLINK_HOPS) throw new FsError('ELOOP', `too many symbolic links in ${joinVolumePath(components)}`)
    done.pop()
    if (target.startsWith('/')) done.length = 0
    pending.unshift(...target.split('/'))
  }
  return done
}
