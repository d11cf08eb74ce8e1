/**
 * FouSender (src/dataplane/fou.ts): what it hands the native `sendUdp` (inner packets as they
 * are, the socket of each flow's hash, the FOU port, UDP_SEGMENT on), how it counts, and the
 * fallback when the kernel refuses UDP_SEGMENT: the binding reports the refusal in res[4]
 * (it has sent those packets one by one), and from then on every call asks for one datagram per
 * packet; the refusal is counted and logged once, and the status names the errno.
 */
import { constants } from 'node:os';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { ENCAP_FOU, Peer, Verdict, fouFlowHash, fouSourceIndex } from '../../src/ipip/index.js';
import { C, Figures } from '../../src/dataplane/figures.js';
import { FOU_GSO_MAX, FouSender } from '../../src/dataplane/fou.js';
import { Tracer } from '../../src/dataplane/trace.js';
import type { NativeBinding } from '../../src/tun/native.js';
import { inner } from '../helpers/tunnel-sides.js';
import { ip } from '../helpers/packets.js';

interface Call {
  n: number;
  gsoMax: number;
  port: number;
  fds: number[];
  tos: number[];
  packets: Buffer[];
}

/** A sendUdp that records each call and answers as the kernel would, refusing UDP_SEGMENT with `refuse` (errno) if set. */
function fakeSendUdp(calls: Call[], refuse = 0): NativeBinding['sendUdp'] {
  return (slab, offs, lens, _dsts, fds, n, res, port, gsoMax, tos) => {
    calls.push({ n, gsoMax, port, fds: Array.from(fds.subarray(0, n)), tos: Array.from(tos!.subarray(0, n)), packets: Array.from({ length: n }, (_, i) => Buffer.from(slab.subarray(offs[i]!, offs[i]! + lens[i]!))) });
    res.fill(0);
    if (gsoMax > 1) {
      if (refuse !== 0) res[4] = refuse; // sent one by one after all
      else {
        res[2] = 1;
        res[3] = n;
      }
    }
    return n;
  };
}

function setup(refuse = 0): { sender: FouSender; figures: Figures; calls: Call[]; logs: string[]; peer: Peer; buf: Buffer; offs: number[] } {
  const figures = new Figures(1);
  const calls: Call[] = [];
  const logs: string[] = [];
  const log = pino({ level: 'warn' }, { write: (l: string) => logs.push(l) });
  const sender = new FouSender(16, { recvFd: -1, sendFds: [101, 102, 103, 104], port: 5555, gso: true, gro: true }, figures, log, fakeSendUdp(calls, refuse));
  const peer = new Peer({ index: 0, name: 'b', endpoint: ip('198.51.100.2'), encap: ENCAP_FOU });
  // Three segments of one TCP flow, each 20 bytes into its slot (poisoned headroom).
  const buf = Buffer.alloc(3 * 2048, 0xa5);
  const offs: number[] = [];
  for (let s = 0; s < 3; s++) {
    const p = inner({ protocol: 6, payload: 1000, id: s });
    p.writeUInt16BE(40000, 20);
    p.writeUInt16BE(443, 22);
    p.copy(buf, s * 2048 + 20);
    offs.push(s * 2048 + 20);
  }
  return { sender, figures, calls, logs, peer, buf, offs };
}

describe('FouSender', () => {
  it('sends the inner packets as they are, from the flow hash\'s socket, to the FOU port, with UDP_SEGMENT', () => {
    const { sender, figures, calls, peer, buf, offs } = setup();
    for (const o of offs) sender.queue(buf, o, 1020, peer, 0, 0xba);
    expect(sender.flush(buf, -1, new Tracer(4))).toBe(-1);
    expect(calls).toHaveLength(1);
    const c = calls[0]!;
    expect(c).toMatchObject({ n: 3, gsoMax: FOU_GSO_MAX, port: 5555 });
    const fd = [101, 102, 103, 104][fouSourceIndex(fouFlowHash(buf, offs[0]!), 4)];
    expect(c.fds).toEqual([fd, fd, fd]);
    // The outer TOS of each (PacketResult.tos), for the kernel's IP_TOS cmsg.
    expect(c.tos).toEqual([0xba, 0xba, 0xba]);
    offs.forEach((o, i) => expect(c.packets[i]!.equals(buf.subarray(o, o + 1020))).toBe(true));
    expect(figures.counters[C.tx_packets]).toBe(3);
    expect(figures.counters[C.tx_bytes]).toBe(3 * 1020);
    expect(figures.counters[C.fou_gso_sends]).toBe(1);
    expect(figures.counters[C.fou_gso_segments]).toBe(3);
    expect(figures.peers.txPackets[0]).toBe(3);
    expect(sender.count).toBe(0);
  });

  it('refused UDP_SEGMENT (EIO): nothing lost, counted and logged once, then one datagram per packet', () => {
    const { sender, figures, calls, logs, peer, buf, offs } = setup(constants.errno.EIO);
    for (let round = 0; round < 3; round++) {
      for (const o of offs) sender.queue(buf, o, 1020, peer, 0, 0xba);
      sender.flush(buf, -1, new Tracer(4));
    }
    expect(calls.map((c) => c.gsoMax)).toEqual([FOU_GSO_MAX, 1, 1]);
    expect(figures.counters[C.tx_packets]).toBe(9);
    expect(figures.counters[C.fou_gso_refused]).toBe(1);
    expect(figures.counters[C.fou_gso_sends]).toBe(0);
    expect(figures.drops.reduce((a, b) => a + b, 0)).toBe(0);
    expect(sender.gsoRefused).toBe('EIO');
    expect(sender.gsoMax).toBe(1);
    expect(logs).toHaveLength(1);
    expect(JSON.parse(logs[0]!)).toMatchObject({ code: 'EIO', msg: expect.stringMatching(/refused UDP_SEGMENT/) });
  });

  it('a failed send is one socket_write_error per packet read, whatever its segments', () => {
    const figures = new Figures(1);
    const failing: NativeBinding['sendUdp'] = (_s, _o, lens, _d, _f, n, res) => {
      for (let i = 0; i < n; i++) lens[i] = -constants.errno.ENOBUFS;
      res.fill(0);
      res[0] = n;
      res[1] = constants.errno.ENOBUFS;
      return 0;
    };
    const sender = new FouSender(16, { recvFd: -1, sendFds: [7], port: 5555, gso: true, gro: true }, figures, pino({ level: 'silent' }), failing);
    const peer = new Peer({ index: 0, name: 'b', endpoint: ip('198.51.100.2'), encap: ENCAP_FOU });
    const p = inner({ payload: 100 });
    const buf = Buffer.alloc(4096);
    p.copy(buf, 20);
    p.copy(buf, 2068);
    sender.queue(buf, 20, p.length, peer, 0, 0);
    sender.queue(buf, 2068, p.length, peer, 0, 0);
    sender.queue(buf, 20, p.length, peer, 1, 0);
    const tracer = new Tracer(4);
    expect(sender.flush(buf, -1, tracer)).toBe(1);
    expect(figures.drops[Verdict.socket_write_error]).toBe(2); // slots 0 and 1
    expect(figures.counters[C.tx_packets]).toBe(0);
    expect(figures.lastErrors.underlaySend).toBe('ENOBUFS');
  });

  it('discard / restore: the JIT warm-up sends into the discard fd', () => {
    const { sender, calls, peer, buf, offs } = setup();
    const real = sender.discard(-2);
    sender.queue(buf, offs[0]!, 1020, peer, 0, 0);
    sender.flush(buf, -1, new Tracer(4));
    expect(calls[0]!.fds).toEqual([-2]);
    sender.restore(real);
    expect(Array.from(sender.fds)).toEqual([101, 102, 103, 104]);
  });
  it('a packet queued in two pieces (a TSO segment: headers, then payload elsewhere) reaches sendUdp as heads/tails', () => {
    const figures = new Figures(1);
    const seen: Array<{ heads: number[]; tails: number[]; lens: number[] }> = [];
    const record: NativeBinding['sendUdp'] = (_slab, _offs, lens, _dsts, _fds, n, res, _port, _gso, _tos, heads, tails) => {
      seen.push({ heads: Array.from(heads!.subarray(0, n)), tails: Array.from(tails!.subarray(0, n)), lens: Array.from(lens.subarray(0, n)) });
      res.fill(0);
      return n;
    };
    const sender = new FouSender(16, { recvFd: -1, sendFds: [7], port: 5555, gso: true, gro: true }, figures, pino({ level: 'silent' }), record);
    const peer = new Peer({ index: 0, name: 'b', endpoint: ip('198.51.100.2'), encap: ENCAP_FOU });
    const p = inner({ protocol: 6, payload: 1000 });
    const buf = Buffer.alloc(8192);
    p.copy(buf, 20);
    sender.queue(buf, 20, p.length, peer, 0, 0);
    sender.queue(buf, 4096, 52 + 1000, peer, 0, 0, 52, 100);
    sender.flush(buf, -1, new Tracer(4));
    expect(seen).toEqual([{ heads: [0, 52], tails: [0, 100], lens: [p.length, 1052] }]);
    // Counted as the whole packet, headers and payload.
    expect(figures.counters[C.tx_bytes]).toBe(p.length + 1052);
  });
});
