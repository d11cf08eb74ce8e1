/**
 * The bench's progress: one line on stderr, rewritten in place on a terminal, one line per step
 * otherwise (progress); clearProgress before anything else is written; say for a message of its
 * own line.
 */

const tty = process.stderr.isTTY === true;
const t0 = Date.now();
let progressShown = false;

export function progress(msg: string): void {
  const line = `[${((Date.now() - t0) / 1000).toFixed(0).padStart(3)} s] ${msg}`;
  if (tty) {
    process.stderr.write(`\r\x1b[K${line.slice(0, (process.stderr.columns ?? 120) - 1)}`);
    progressShown = true;
  } else {
    process.stderr.write(`${line}\n`);
  }
}

export function clearProgress(): void {
  if (tty && progressShown) process.stderr.write('\r\x1b[K');
  progressShown = false;
}

export function say(msg: string): void {
  clearProgress();
  process.stderr.write(`${msg}\n`);
}
