import { fsError } from './errors.js'
import { S_IFMT, S_ISGID, S_ISVTX, isDir, type Inode } from './records.js'

/** Who is asking: the caller's effective ids and supplementary groups. */
export interface Cred {
  uid: number
  gid: number
  groups: readonly number[]
  /**
   * Set when the kernel already checked access (FUSE default_permissions):
   * the core then skips access checks and keeps only the rules the kernel
   * leaves to the filesystem (ownership of new files, setgid inheritance).
   */
  kernelChecked?: boolean
}

export const ROOT: Cred = { uid: 0, gid: 0, groups: [] }

export const R_OK = 4
export const W_OK = 2
export const X_OK = 1

export function inGroup(cred: Cred, gid: number): boolean {
  return cred.gid === gid || cred.groups.includes(gid)
}

/** POSIX access check with owner/group/other classes; root passes except for execute with no x bit. */
export function mayAccess(cred: Cred, inode: Inode, want: number): boolean {
  if (cred.uid === 0) {
    if (want & X_OK && !isDir(inode.mode) && (inode.mode & 0o111) === 0) return false
    return true
  }
  let bits: number
  if (cred.uid === inode.uid) bits = (inode.mode >> 6) & 7
  else if (inGroup(cred, inode.gid)) bits = (inode.mode >> 3) & 7
  else bits = inode.mode & 7
  return (bits & want) === want
}

export function checkAccess(cred: Cred, inode: Inode, want: number, what = 'permission denied'): void {
  if (cred.kernelChecked) return
  if (!mayAccess(cred, inode, want)) throw fsError('EACCES', what)
}

/** Sticky directories: only the owner of the entry, of the directory, or root may remove or rename it. */
export function checkSticky(cred: Cred, dir: Inode, victim: Inode): void {
  if (cred.kernelChecked) return
  if ((dir.mode & S_ISVTX) === 0 || cred.uid === 0) return
  if (cred.uid === victim.uid || cred.uid === dir.uid) return
  throw fsError('EPERM', 'sticky directory: not the owner')
}

export function isOwnerOrRoot(cred: Cred, inode: Inode): boolean {
  return cred.uid === 0 || cred.uid === inode.uid
}

/** The mode bits a chmod by `cred` actually sets (non-members lose setgid on files). */
export function chmodResult(cred: Cred, inode: Inode, mode: number): number {
  let bits = mode & 0o7777
  if (!cred.kernelChecked && cred.uid !== 0 && !isDir(inode.mode) && !inGroup(cred, inode.gid)) bits &= ~S_ISGID
  return (inode.mode & S_IFMT) | bits
}
