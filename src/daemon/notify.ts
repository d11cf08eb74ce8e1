/**
 * The systemd notification protocol (sd_notify(3)), for `Type=notify` units: newline-separated
 * `KEY=VALUE` assignments in one datagram to the Unix socket named by $NOTIFY_SOCKET (a path,
 * or '@name' for an abstract socket). Without $NOTIFY_SOCKET every function here does nothing,
 * so ipipd run by hand or in a test is unchanged. A failed send returns false (the first
 * failure goes to `onError` when one is given: the CLI logs it) and never fails the daemon
 * (sd_notify ignores errors the same way).
 *
 * Flow, in the order of this file: `notify` (one datagram), then what the daemon says:
 * `ready` (READY=1, once it forwards: routes in, control socket up), `reloading` (RELOADING=1
 * with MONOTONIC_USEC, for a live reload; answer with `ready` when done), `stopping`
 * (STOPPING=1, at the start of shutdown), and `startWatchdog` (WATCHDOG=1 every half
 * $WATCHDOG_USEC, when systemd asks for it with `WatchdogSec=`).
 */
import { native } from '../tun/native.js';

/** The environment the functions read; a parameter so that tests can give their own. */
type Env = Readonly<Record<string, string | undefined>>;

let warned = false;

/**
 * Send `state` (e.g. "READY=1\nSTATUS=up") to $NOTIFY_SOCKET. Returns whether it was sent; false
 * without $NOTIFY_SOCKET or when the send failed (`onError` hears the first failure).
 */
export function notify(state: string, env: Env = process.env, onError?: (err: Error) => void): boolean {
  const path = env.NOTIFY_SOCKET;
  if (path === undefined || path === '') return false;
  try {
    native.notifyDatagram(path, state);
    return true;
  } catch (err) {
    if (!warned) onError?.(err as Error);
    warned = true;
    return false;
  }
}

/** READY=1: the data path forwards, the routes are in and the control socket answers. */
export function ready(status: string, env: Env = process.env, onError?: (err: Error) => void): boolean {
  return notify(`READY=1\nSTATUS=${status}\nMAINPID=${process.pid}`, env, onError);
}

/**
 * RELOADING=1 with the CLOCK_MONOTONIC time in microseconds (systemd 253+ `Type=notify-reload`
 * needs both); send `ready()` when the reload is done.
 */
export function reloading(env: Env = process.env): boolean {
  // process.hrtime is libuv's uv_hrtime: CLOCK_MONOTONIC, in nanoseconds.
  return notify(`RELOADING=1\nMONOTONIC_USEC=${process.hrtime.bigint() / 1000n}`, env);
}

/** STOPPING=1: shutdown has begun. */
export function stopping(env: Env = process.env): boolean {
  return notify('STOPPING=1', env);
}

/**
 * If systemd set $WATCHDOG_USEC (and $WATCHDOG_PID is unset or ours), send WATCHDOG=1 every
 * half of it, from a timer that does not keep the process alive; returns the function that
 * stops it (a no-op without a watchdog). The event loop sending it is what it proves alive.
 */
export function startWatchdog(env: Env = process.env): () => void {
  const usec = Number(env.WATCHDOG_USEC);
  if (!(usec > 0) || env.NOTIFY_SOCKET === undefined) return () => {};
  if (env.WATCHDOG_PID !== undefined && Number(env.WATCHDOG_PID) !== process.pid) return () => {};
  const every = Math.max(1, Math.floor(usec / 2000));
  notify('WATCHDOG=1', env);
  const timer = setInterval(() => notify('WATCHDOG=1', env), every);
  timer.unref();
  return () => clearInterval(timer);
}
