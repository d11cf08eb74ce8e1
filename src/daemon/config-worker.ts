/**
 * Worker thread entry of the config thread (src/daemon/config-thread.ts says why): read and
 * validate one config (`file`, or `text` named `source`) with the parser (src/daemon/config.ts),
 * post the result or the error as plain data, and end: with no handle left the thread exits and
 * its isolate, with yaml's and zod's code and everything parsing made, goes with it.
 */
import './young-generation.js';
import { parentPort, workerData } from 'node:worker_threads';
import { toPlainError } from './config-plain.js';
import { loadConfig, parseConfig } from './config.js';
import type { ConfigRequest, ConfigResult } from './config-thread.js';

const req = workerData as ConfigRequest;
let result: ConfigResult;
try {
  result = { config: 'file' in req ? loadConfig(req.file) : parseConfig(req.text, req.source) };
} catch (err) {
  result = { error: toPlainError(err) };
}
parentPort!.postMessage(result);
