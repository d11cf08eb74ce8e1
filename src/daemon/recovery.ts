/**
 * Crash recovery: what a daemon that died without cleaning up (SIGKILL, a crash) left behind is
 * found and removed by the next start with the same config, and nothing else is touched.
 *
 * A running daemon marks what it made: a state file (`statePath`) recording its pid, network
 * namespace, TUN name and ifindex, the routes it installs and its control socket; and every route
 * it adds carries ipipd's own route protocol number, RTPROT_IPIPD (`ip route` shows `proto 77`).
 * Flow, in the order of this file: `statePath`; `writeState` (after the TUN exists; its undo is
 * `removeFile`, src/daemon/dirs.ts); `recover` (before anything is touched at start-up):
 *   - no state file: nothing to recover; a device with the TUN's name then is someone else's,
 *     and start-up refuses it untouched (ERR_TUN_EXISTS). One that cannot be read or is corrupt
 *     counts as none, with a warning that says why;
 *   - the recorded process is alive (same pid, same start time): ERR_ALREADY_RUNNING, nothing
 *     changed;
 *   - it is dead: the device with the recorded name AND ifindex, the routes of protocol
 *     RTPROT_IPIPD through that ifindex, the control socket and the state file are removed,
 *     each logged. (The kernel deletes a TUN when its last fd closes, and its routes and address
 *     with it, so usually only the socket and the state file are left; the rest is for a device
 *     that outlived the daemon, e.g. held open by a child process.) Plain routes (cross-subnet)
 *     and blackholes (own blocks) do not go with the TUN: those the state file records are
 *     deleted whatever became of the TUN (`recoverUnderlayRoutes`).
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { makeDirs, removeFile } from './dirs.js';
import { formatIPv4 } from '../routing/prefix.js';
import { RTN_BLACKHOLE, type Rtnl } from '../tun/netlink.js';
import type { Config } from './config.js';
import { RUN_DIR, netnsId } from './control.js';
import { IpipdError, errnoName } from './errors.js';
import { isoTime } from './iso-time.js';
import type { Logger } from './logger.js';
import type { RecordedUnderlayRoutes } from './plain-routes.js';

/** rtm_protocol of every route ipipd installs (unassigned in iproute2's rt_protos; Calico's is 80). */
export const RTPROT_IPIPD = 77;

/** What the state file records. */
export interface DaemonState {
  pid: number;
  /** The pid's start time (`processStart`), so that a reused pid is not taken for the daemon. */
  pidStart?: number;
  netns: string | undefined;
  tun: string;
  ifindex: number;
  table: number;
  routes: string[];
  socket: string | false;
  startedAt: string;
  /** Plain routes (encap.mode: cross-subnet) and blackholes (routes.own_blocks): they outlive the TUN. */
  underlayRoutes?: RecordedUnderlayRoutes;
}

/** The state file: beside the control socket (`<socket>.state`), or /run/ipipd/<tun>.<netns>.state without one. */
export function statePath(c: Config): string {
  if (c.control.socket !== false) return c.control.socket.replace(/(\.sock)?$/, '.state');
  const ns = netnsId();
  return `${RUN_DIR}/${c.tun.name}${ns === undefined ? '' : `.${ns}`}.state`;
}

/** Record this daemon's TUN (atomically: write, then rename). Throws IpipdError ERR_STATE_FILE. */
export function writeState(c: Config, ifindex: number, underlayRoutes?: RecordedUnderlayRoutes): string {
  const path = statePath(c);
  const state: DaemonState = {
    pid: process.pid,
    pidStart: processStart(process.pid),
    netns: netnsId(),
    tun: c.tun.name,
    ifindex,
    table: c.routes.table,
    routes: c.routes.install ? c.peers.flatMap((p) => p.prefixes.map((x) => x.text)) : [],
    socket: c.control.socket,
    // The process's start, not this write's: a reload rewrites the file (src/daemon/plain-routes.ts).
    startedAt: isoTime(Date.now() - process.uptime() * 1000),
    ...(underlayRoutes ? { underlayRoutes } : {}),
  };
  try {
    makeDirs(dirname(path), 0o755);
    writeFileSync(`${path}.tmp`, JSON.stringify(state, null, 2) + '\n', { mode: 0o644 });
    renameSync(`${path}.tmp`, path);
  } catch (err) {
    throw new IpipdError('ERR_STATE_FILE', `cannot write the state file ${path}: ${errnoName(err) ?? err}`, { cause: err });
  }
  return path;
}

/**
 * The state file at `path`; undefined when there is none, and also when it cannot be read or is
 * not one ipipd wrote: then crash recovery is skipped, and `log` says why.
 */
function readState(path: string, log: Logger): DaemonState | undefined {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    if (errnoName(err) !== 'ENOENT') log.warn({ stateFile: path, code: errnoName(err) ?? String(err) }, 'cannot read the state file: crash recovery skipped');
    return undefined;
  }
  let problem: string;
  try {
    const s = JSON.parse(text) as DaemonState | null;
    if (typeof s?.pid === 'number' && typeof s.ifindex === 'number' && typeof s.tun === 'string') return s;
    problem = 'no pid, ifindex and tun in it';
  } catch (err) {
    problem = `not JSON: ${(err as Error).message}`;
  }
  log.warn({ stateFile: path, problem }, 'the state file is corrupt: crash recovery skipped');
  return undefined;
}

/**
 * When process `pid` started, in clock ticks after boot (/proc/PID/stat field 22), or undefined
 * if there is no such process. A pid with the same start time is the same process: a pid the
 * kernel reused since is not mistaken for the daemon that wrote the state file.
 */
export function processStart(pid: number): number | undefined {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // Field 2 (comm) is in parentheses and may hold spaces: count the fields after its ')'.
  const start = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  return start === undefined ? undefined : Number(start);
}

/** Whether the daemon of state `s` still runs: its pid is alive with the start time it recorded. */
function isAlive(s: DaemonState): boolean {
  if (s.pid === process.pid) return false;
  const start = processStart(s.pid);
  return start !== undefined && (s.pidStart === undefined || start === s.pidStart);
}

/**
 * Before start-up touches anything: refuse if the daemon of the state file is alive, else remove
 * what it left (only what it marked as its own) and log each removal.
 */
export async function recover(c: Config, rtnl: Rtnl, log: Logger): Promise<void> {
  const path = statePath(c);
  const rlog = log.child({ subsystem: 'recovery' });
  const s = readState(path, rlog);
  if (s === undefined) return;
  if (isAlive(s)) {
    throw new IpipdError('ERR_ALREADY_RUNNING', `ipipd pid ${s.pid} already runs TUN ${s.tun} here (state file ${path}); stop it first, or give this one another tun.name`);
  }
  rlog.warn({ pid: s.pid, since: s.startedAt, stateFile: path }, 'a previous ipipd died without cleaning up: removing what it left');
  const link = (await rtnl.links()).find((l) => l.index === s.ifindex && l.name === s.tun);
  if (link !== undefined) {
    for (const r of await rtnl.routes(s.table)) {
      if (r.protocol !== RTPROT_IPIPD || r.oif !== s.ifindex) continue;
      await rtnl.delRoute({ dst: r.dst, dstLen: r.dstLen, oif: s.ifindex, table: s.table });
      rlog.warn({ route: `${formatIPv4(r.dst)}/${r.dstLen} dev ${s.tun}` }, 'removed a route it left');
    }
    await rtnl.delLink(s.ifindex);
    rlog.warn({ tun: s.tun, ifindex: s.ifindex }, 'removed the TUN it left');
  }
  if (s.underlayRoutes) await recoverUnderlayRoutes(s.underlayRoutes, s.table, rtnl, rlog);
  if (s.socket !== false) {
    try {
      if (removeFile(s.socket)) rlog.warn({ socket: s.socket }, 'removed its control socket');
    } catch (err) {
      // Not "gone already": this fails the start, as a route that cannot be deleted does, with
      // the state file kept for the next try.
      throw new IpipdError('ERR_CONTROL_SOCKET', `crash recovery: cannot remove ${s.socket}, the dead ipipd's control socket (${errnoName(err) ?? err})`, { cause: err });
    }
  }
  try {
    removeFile(path);
  } catch (err) {
    throw new IpipdError('ERR_STATE_FILE', `crash recovery: cannot remove the dead ipipd's state file ${path} (${errnoName(err) ?? err})`, { cause: err });
  }
}

/**
 * The plain routes and blackholes a dead daemon recorded (src/daemon/plain-routes.ts): unlike its
 * TUN routes they are still there. Only a route of RTPROT_IPIPD matching a recorded one exactly
 * (destination, and next hop and device, or blackhole) is deleted.
 */
async function recoverUnderlayRoutes(rec: RecordedUnderlayRoutes, table: number, rtnl: Rtnl, rlog: Logger): Promise<void> {
  const holes = new Set(rec.blackholes);
  const plain = new Set(rec.plain.map((r) => `${r.dst} via ${r.via} ${r.ifindex}`));
  for (const r of await rtnl.routes(table)) {
    if (r.protocol !== RTPROT_IPIPD) continue;
    const dst = `${formatIPv4(r.dst)}/${r.dstLen}`;
    if (r.type === RTN_BLACKHOLE && holes.has(dst)) {
      await rtnl.delRoute({ dst: r.dst, dstLen: r.dstLen, oif: 0, table, blackhole: true });
      rlog.warn({ route: `blackhole ${dst}` }, 'removed a route it left');
    } else if (r.gateway !== undefined && r.oif !== undefined && plain.has(`${dst} via ${formatIPv4(r.gateway)} ${r.oif}`)) {
      await rtnl.delRoute({ dst: r.dst, dstLen: r.dstLen, oif: r.oif, gateway: r.gateway, table });
      rlog.warn({ route: `${dst} via ${formatIPv4(r.gateway)}` }, 'removed a route it left');
    }
  }
}
