import { createHash } from 'node:crypto'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import path from 'node:path'

const TEXT = /\.(js|mjs|cjs|ts|mts|cts|md|json|c|h|cc|txt)$/

/**
 * Distinct source-code text from the project's node_modules (JavaScript,
 * TypeScript, C, Markdown), deduplicated by content so the pipeline cannot
 * win by deduplication; up to `maxBytes`.
 */
export function sourceTextCorpus(root: string, maxBytes: number): Buffer {
  const seen = new Set<string>()
  const parts: Buffer[] = []
  let total = 0
  const walk = (dir: string): void => {
    let entries: string[]
    try {
      entries = readdirSync(dir).sort()
    } catch {
      return
    }
    for (const name of entries) {
      if (total >= maxBytes) return
      const file = path.join(dir, name)
      let st
      try {
        st = statSync(file)
      } catch {
        continue
      }
      if (st.isDirectory()) walk(file)
      else if (st.isFile() && TEXT.test(name) && st.size > 256 && st.size < 8 * 1024 * 1024) {
        const data = readFileSync(file)
        const digest = createHash('sha1').update(data).digest('hex')
        if (seen.has(digest)) continue
        seen.add(digest)
        parts.push(data)
        total += data.length
      }
    }
  }
  walk(root)
  const distinct = Buffer.concat(parts)
  if (distinct.length >= maxBytes) return distinct.subarray(0, maxBytes)
  // Not enough distinct text: repeat it, changing one byte in every 512 of each copy, so
  // the copies stay source text (same compressibility) but share no chunk with the original.
  const out = Buffer.alloc(maxBytes)
  for (let at = 0, round = 0; at < maxBytes; at += distinct.length, round++) {
    const n = distinct.copy(out, at, 0, Math.min(distinct.length, maxBytes - at))
    if (round > 0) for (let i = at + (round % 512); i < at + n; i += 512) out[i] = 0x41 + ((out[i] + round) % 26)
  }
  return out
}
