import { createRequire } from 'node:module'

// libsodium's Argon2id (crypto_pwhash) is only in the "sumo" build of libsodium-wrappers.
type Sodium = typeof import('libsodium-wrappers-sumo')

let ready: Promise<Sodium> | undefined

/** The initialised libsodium instance (its WASM loads once, on first use). */
export function sodium(): Promise<Sodium> {
  ready ??= (async () => {
    const lib = createRequire(import.meta.url)('libsodium-wrappers-sumo') as Sodium
    await lib.ready
    return lib
  })()
  return ready
}
