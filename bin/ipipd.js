#!/usr/bin/env node
// The `ipipd` command: the compiled CLI (npm ci builds it into dist/). The young-generation limit
// comes first, before the CLI's modules load (src/daemon/footprint.ts says why).
import { limitYoungGeneration } from '../dist/src/daemon/footprint.js';

limitYoungGeneration();
await import('../dist/src/daemon/cli.js');
