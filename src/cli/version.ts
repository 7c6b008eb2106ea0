import { readFileSync } from 'node:fs'

/** The package version, read once from package.json next to dist/ or src/. */
export const version: string = JSON.parse(readFileSync(new URL(import.meta.url.includes('/dist/') ? '../../../package.json' : '../../package.json', import.meta.url), 'utf8')).version
