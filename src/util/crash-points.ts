/**
 * Deliberate crash points for the soak harness (`npm run soak -- crash
 * --at NAME`): when S0FS_CRASH_AT is "NAME" or "NAME:N", the process kills
 * itself with SIGKILL the first (or N-th) time it passes that point — the
 * moments where an OOM kill or a power cut would hurt most. Outside the
 * harness the variable is unset and a crash point is one comparison.
 *
 * Points: commit-before-head (the pack is uploaded, the head not moved),
 * commit-before-log-drop (the head moved, the local log still whole),
 * gc-before-delete (notice acknowledged, relocations written),
 * gc-before-index (objects deleted, blob index not yet rewritten).
 */

const [armedName, armedCount] = (process.env.S0FS_CRASH_AT ?? '').split(':')
let passes = 0

export function crashPoint(name: string): void {
  if (armedName !== name) return
  if (++passes < Number(armedCount || 1)) return
  process.kill(process.pid, 'SIGKILL')
}
