/**
 * Config files are parsed and validated in a short-lived worker thread, never in the daemon's
 * own isolate: yaml and zod (src/daemon/config.ts) are ~4 MiB of V8 heap once loaded, code and
 * schema objects that would stay for the process's life though the daemon needs them only at
 * start and on a reload (docs/performance.md, "Footprint: what a node pays", "Second pass").
 * The worker (src/daemon/config-worker.ts) posts back the frozen `Config` as plain data
 * (src/daemon/config-plain.ts) or the error it raised, then exits, and its heap goes with it.
 * The errors are those of `ipipd check`, code and message unchanged. Costs ~30-50 ms per parse
 * for the thread's start: at start-up and per reload, never on the data path.
 */
import { Worker } from 'node:worker_threads';
import { deepFreeze, fromPlainError, type Config, type PlainError } from './config-plain.js';

/** What the config thread is asked: a file to read, or a text (named `source` in messages). */
export type ConfigRequest = { file: string } | { text: string; source: string };
/** What it answers: the config, or the error it would have thrown. */
export type ConfigResult = { config: Config } | { error: PlainError };

const WORKER = new URL('./config-worker.js', import.meta.url);

/** Parse and validate in a worker thread; resolves to the frozen config, rejects with its IpipdError. */
export function configInThread(req: ConfigRequest, script: URL = WORKER): Promise<Config> {
  return new Promise((resolve, reject) => {
    let answered = false;
    const w = new Worker(script, { workerData: req, name: 'ipipd config' });
    w.once('message', (r: ConfigResult) => {
      answered = true;
      if ('config' in r) resolve(deepFreeze(r.config));
      else reject(fromPlainError(r.error));
    });
    w.once('error', (err) => {
      answered = true;
      reject(err);
    });
    w.once('exit', (code) => {
      if (!answered) reject(new Error(`the config thread exited (${code}) without an answer`));
    });
  });
}

/** `loadConfig(file)` (src/daemon/config.ts) in a worker thread. */
export function loadConfigInThread(file: string): Promise<Config> {
  return configInThread({ file });
}

/** `parseConfig(text, source)` in a worker thread. */
export function parseConfigInThread(text: string, source: string): Promise<Config> {
  return configInThread({ text, source });
}
