/**
 * `ipipd run`: validate the config, then start the daemon (src/daemon/daemon.ts) and run it
 * until a signal or a failure. Reached two ways: straight from bin/ipipd.js when the command line
 * is a well-formed `run` (src/daemon/run-args.ts; yargs is then never loaded), or from the yargs
 * CLI (src/daemon/cli.ts) for anything else that names `run`. Errors end the process with the
 * exit status of their code in the registry (src/daemon/errors.ts): 2 for usage and config, 1 at
 * run time.
 *
 * Signals while running: SIGINT/SIGTERM start a clean shutdown (routes, address, device and
 * sockets are removed, final counters logged); a second one exits at once (status 130/143);
 * SIGUSR1 logs the counters; SIGHUP re-reads the config file and applies it (README "Live
 * changes"). After a failure while running (ERR_QUEUE, ERR_TUN_GONE) the daemon shuts down by
 * itself and exits 1; a signal meanwhile does not cut that short or make it 0. Under systemd
 * (`Type=notify`, $NOTIFY_SOCKET): READY=1 once the daemon forwards, STOPPING=1 when shutdown
 * begins, WATCHDOG=1 if asked (src/daemon/notify.ts).
 */
import { loadConfigInThread } from './config-thread.js';
import { IpipdError, NATIVE_FIX } from './errors.js';
import { tuneMallocEarly } from './footprint.js';
import { createLogger, writeStderr } from './logger.js';
import type { Level } from './run-args.js';

/** Ends the process for an error: `ipipd: CODE: message` and the code's exit status, else the stack and 1. */
export function fail(err: unknown): never {
  if (err instanceof IpipdError) {
    writeStderr(`ipipd: ${err.code}: ${err.message}\n`);
    process.exit(err.exitCode);
  }
  writeStderr(`ipipd: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
}

/** `ipipd run --config FILE [--log-level LEVEL]`: the daemon, until a signal or a failure. */
export async function run(file: string, levelOverride: Level | undefined): Promise<void> {
  await tuneMallocEarly();
  // Validate before anything else: a bad config exits 2 without touching the system. In a
  // thread of its own, so that the parser's code and heap do not stay (src/daemon/config-thread.ts).
  const config = await loadConfigInThread(file);
  const log = createLogger(levelOverride ?? config.log.level);
  let DaemonCtor: typeof import('./daemon.js').Daemon;
  let sd: typeof import('./notify.js');
  try {
    ({ Daemon: DaemonCtor } = await import('./daemon.js'));
    sd = await import('./notify.js');
  } catch (err) {
    throw new IpipdError('ERR_NATIVE_LOAD', `cannot load the data path: ${err instanceof Error ? err.message : err}; ${NATIVE_FIX}`, { cause: err });
  }
  const daemon = new DaemonCtor(config, log);
  daemon.configFile = file;
  // systemd: RELOADING=1 (with MONOTONIC_USEC) before an accepted reload is applied, READY=1 after.
  const notifyFailed = (err: Error): void => log.warn({ socket: process.env.NOTIFY_SOCKET, code: (err as { code?: string }).code }, 'cannot notify systemd (NOTIFY_SOCKET)');
  daemon.onReload = {
    before: () => void sd.reloading(),
    after: () => void sd.ready(`reloaded: ${daemon.config.tun.name}, ${daemon.config.peers.length} peer(s)`, process.env, notifyFailed),
  };
  // SIGHUP: re-read the config file and apply it (README "Live changes"); a bad one changes nothing.
  process.on('SIGHUP', () => {
    void daemon.reloadFile('SIGHUP').then(
      (r) => log.info({ subsystem: 'reload', changes: r.changes, errors: r.errors }, 'SIGHUP: reloaded'),
      (err) => log.error({ subsystem: 'reload', code: (err as { code?: string }).code, err: err instanceof Error ? err.message : String(err) }, 'SIGHUP: reload refused; nothing changed'),
    );
  });
  let signals = 0;
  // A failure being shut down (a queue died, the TUN vanished): a signal must not turn it into exit 0.
  let fatal: Error | undefined;
  let stopWatchdog = (): void => {};
  const onSignal = (sig: NodeJS.Signals): void => {
    signals++;
    if (signals > 1) {
      log.warn({ signal: sig }, 'second signal: exiting now without cleanup');
      process.exit(sig === 'SIGINT' ? 130 : 143);
    }
    if (fatal) {
      log.warn({ signal: sig, err: fatal.message }, 'signal: already shutting down after a failure; exit status stays 1');
      return;
    }
    log.info({ signal: sig }, 'signal: shutting down');
    stopWatchdog();
    sd.stopping();
    void daemon.close(sig).then(() => process.exit(0), (err) => fail(err));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('SIGUSR1', () => {
    void daemon.status().then((s) => log.info({ subsystem: 'stats', counters: s.counters, drops: s.drops, peers: s.peers, queues: s.queues }, 'counters (SIGUSR1)'));
  });
  // A data-path queue that dies would lose its flows silently, a vanished TUN delivers nothing:
  // shut down cleanly, exit 1.
  daemon.onFatal = (err) => {
    if (signals > 0 || fatal) return;
    fatal = err;
    stopWatchdog();
    sd.stopping();
    void daemon.close(err instanceof IpipdError ? err.code : 'failure').then(() => fail(err), () => fail(err));
  };
  try {
    await daemon.start();
  } catch (err) {
    fail(err);
  }
  // systemd (Type=notify): ready once it forwards, routes in and control socket up (notify.ts).
  sd.ready(`up: ${config.tun.name}, ${config.peers.length} peer(s)`, process.env, notifyFailed);
  stopWatchdog = sd.startWatchdog();
  // From here the pollers keep the process alive until a signal arrives.
}
