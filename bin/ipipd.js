#!/usr/bin/env node
// The `ipipd` command: the compiled CLI (npm ci builds it into dist/).
import "../dist/src/daemon/cli.js";
