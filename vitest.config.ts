import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/servers/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // FUSE tests mount real filesystems; keep files in separate processes but few at a time on 2 cores.
    pool: 'forks',
    maxWorkers: 2,
    fileParallelism: true,
  },
})
