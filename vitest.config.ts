import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // Integration tests build network namespaces and run real daemons: give them room, and run
    // files one at a time so that two topologies never compete for the 2 cores.
    testTimeout: 120_000,
    hookTimeout: 120_000,
    fileParallelism: false,
    // A committed `.only` must fail the run, not narrow it (vitest allows it unless CI is set).
    allowOnly: false,
    reporters: ['default'],
  },
});
