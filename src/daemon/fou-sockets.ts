/**
 * FOU's sockets (README "FOU"), opened at start-up step 5 (src/daemon/lifecycle.ts) when
 * `fouInUse`: the UDP socket bound to underlay.address:fou.port that receives (UDP_GRO if the
 * kernel takes it), and the send sockets: the receive socket itself when `fou.source_port`
 * equals `fou.port`, else one socket bound to the fixed source port, or with `auto`
 * `fou.source_ports` sockets on ephemeral ports that receive nothing (a flow's hash picks one,
 * src/dataplane/fou.ts). Each is closed by the undo step pushed as it is opened.
 */
import type { FouOptions } from '../dataplane/fou.js';
import { native } from '../tun/native.js';
import type { Config } from './config-plain.js';
import { IpipdError, errnoName } from './errors.js';
import type { Logger } from './logger.js';

/** The sockets, as the queues use them, and the source ports they are bound to (for status). */
export type FouSockets = FouOptions & { sourcePorts: number[] };

/** Open them; `undo` receives a close step per socket, in the order opened. Throws ERR_FOU_SOCKET. */
export function openFouSockets(c: Config, log: Logger, undo: (u: { what: string; run: () => void }) => void): FouSockets {
  const f = c.fou;
  const open = (port: number, what: string, opts: { gro?: boolean; sendOnly?: boolean }): { fd: number; port: number; gro: boolean } => {
    let s: { fd: number; port: number; gro: boolean };
    try {
      s = native.openUdp(c.underlay.address.value, port, c.io.socket_buffer, c.io.socket_buffer, opts);
    } catch (err) {
      throw new IpipdError('ERR_FOU_SOCKET', `cannot open the FOU ${what} on ${c.underlay.address.text}${port ? `:${port}` : ''}: ${errnoName(err) ?? err}`, { cause: err });
    }
    undo({ what: `close FOU ${what}`, run: () => native.close(s.fd) });
    return s;
  };
  const recv = open(f.port, 'socket', { gro: f.offload });
  const send: { fd: number; port: number }[] = [];
  if (f.source_port === f.port) send.push(recv);
  else if (f.source_port !== 'auto') send.push(open(f.source_port, 'source-port socket', { sendOnly: true }));
  else for (let i = 0; i < f.source_ports; i++) send.push(open(0, `source-port socket ${i}`, { sendOnly: true }));
  if (f.offload && !recv.gro) log.warn('the kernel refused UDP_GRO: FOU reads one datagram at a time');
  return { recvFd: recv.fd, sendFds: send.map((s) => s.fd), port: f.port, gso: f.offload, gro: recv.gro, sourcePorts: send.map((s) => s.port) };
}

/** A queue's FouOptions (plain data, for a worker too): `recvFd` the socket it reads, or -1. */
export function fouOptions(f: FouOptions, recvFd: number): FouOptions {
  return { recvFd, sendFds: [...f.sendFds], port: f.port, gso: f.gso, gro: f.gro };
}

