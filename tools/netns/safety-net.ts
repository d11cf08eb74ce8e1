/**
 * The safety net under every namespace the bench and the tests make: one registry of what is
 * alive (topologies, bare namespaces, processes, extra clean-up steps) and one synchronous
 * teardown that runs on every exit path: process 'exit' (normal return, uncaught error) and
 * SIGINT/SIGTERM/SIGHUP (STYLE.md rule 16: torn down on every exit path).
 *
 * Flow of this file: the registry (`register`, `trackChild`, `onCleanup`); `cleanupSync`, which
 * undoes it all; `installSafetyNet`, which hooks `cleanupSync` to 'exit' and the signals. The
 * registering functions install the net themselves, so no caller can forget it.
 */
import type { ChildProcess } from 'node:child_process';

/** Anything that can tear itself down synchronously (a Topology, a bare namespace). */
export interface Teardown {
  downSync(): void;
}

const live = new Set<Teardown>();
const children = new Set<ChildProcess>();
const extraCleanups = new Set<() => void>();
let netInstalled = false;
let onSignalHook: (sig: NodeJS.Signals) => void = () => {};

/** Registers `t` until the returned function is called (when `t` went down by itself). */
export function register(t: Teardown): () => void {
  installSafetyNet(onSignalHook);
  live.add(t);
  return () => live.delete(t);
}

/** Keeps `child` in `set` (default: the net's own) until it exits; SIGKILLed if still running at teardown. */
export function trackChild(child: ChildProcess, set: Set<ChildProcess> = children): void {
  installSafetyNet(onSignalHook);
  set.add(child);
  child.on('close', () => set.delete(child));
  // A spawn failure must not crash the process: whoever waits on the child reports it.
  child.on('error', () => set.delete(child));
}

/** Registers a synchronous clean-up step; returns the function that unregisters it. */
export function onCleanup(f: () => void): () => void {
  installSafetyNet(onSignalHook);
  extraCleanups.add(f);
  return () => extraCleanups.delete(f);
}

/** SIGKILL for every child in `set` still running. */
export function killSync(set: Set<ChildProcess>): void {
  for (const c of set) {
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
  set.clear();
}

/** Everything still alive is killed and torn down, synchronously. Safe to call twice. */
export function cleanupSync(): void {
  killSync(children);
  for (const t of [...live]) {
    live.delete(t);
    t.downSync();
  }
  for (const f of extraCleanups) {
    try {
      f();
    } catch {
      // best effort: the next one still runs
    }
  }
  extraCleanups.clear();
}

/**
 * Installs the 'exit' and signal handlers (once). `onSignal` runs first on a signal (the bench
 * clears its progress line and says what is happening); after the teardown the signal's default
 * action follows (death by that signal, status 128 + signo) unless someone else listens for it.
 */
export function installSafetyNet(onSignal: (sig: NodeJS.Signals) => void = onSignalHook): void {
  onSignalHook = onSignal;
  if (netInstalled) return;
  netInstalled = true;
  process.on('exit', cleanupSync);
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const handler = (): void => {
      onSignalHook(sig);
      cleanupSync();
      process.removeListener(sig, handler);
      if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
    };
    process.on(sig, handler);
  }
}
