/**
 * Imported first, for its effect, by every worker thread entry (src/daemon/queue-worker.ts,
 * src/daemon/config-worker.ts): sets the young-generation limit again before the thread's other
 * modules load. V8 puts `--semi-space-growth-factor` back to its default when it sets up a new
 * isolate's heap, and the flag is per process, so without this each worker, and the main thread
 * after it, would grow their semi-spaces again (`limitYoungGeneration`, src/daemon/footprint.ts;
 * test/unit/footprint.test.ts checks it).
 */
import { limitYoungGeneration } from './footprint.js';

limitYoungGeneration();
