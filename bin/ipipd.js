#!/usr/bin/env node
// The `ipipd` command: the compiled CLI (npm ci builds it into dist/). The young-generation limit
// comes first, before the CLI's modules load (src/daemon/footprint.ts says why). A well-formed
// `ipipd run` starts the daemon without loading yargs (src/daemon/run-args.ts); everything else,
// `run --help` and run's usage errors included, goes through the yargs CLI.
import { limitYoungGeneration } from '../dist/src/daemon/footprint.js';
import { runArgs } from '../dist/src/daemon/run-args.js';

limitYoungGeneration();
const run = runArgs(process.argv.slice(2));
if (run) {
  const { fail, run: runDaemon } = await import('../dist/src/daemon/run.js');
  await runDaemon(run.config, run.logLevel).catch(fail);
} else {
  await import('../dist/src/daemon/cli.js');
}
