/**
 * src/tun/nl-socket.ts, the protocol, and the route watch on top of it, without the kernel: the
 * socket is real (a NETLINK_ROUTE socket joins no group and gets nothing), but `netlinkSend` is
 * replaced by a recorder and the kernel's side is played by writing datagrams into the Reader's
 * slab and calling the batch handler, as the addon does. Replies are built with the codec.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { native } from '../../src/tun/native.js';
import { NetlinkError, NetlinkSocket, type NetlinkHandlers } from '../../src/tun/nl-socket.js';
import { RouteWatch, type RouteEvent } from '../../src/tun/route-watch.js';
import {
  AF_INET,
  decodeRoute,
  encodeRoute,
  msgFlags,
  msgSeq,
  msgType,
  NLM_F_ACK,
  NLM_F_DUMP,
  NLM_F_MULTI,
  NLM_F_REQUEST,
  NLMSG_DONE,
  NLMSG_ERROR,
  RTM_DELROUTE,
  RTM_GETROUTE,
  RTM_NEWROUTE,
  setSeq,
  type RouteMsg,
} from '../../src/tun/rtnetlink.js';

/** What the tests reach inside a NetlinkSocket: the Reader's slab and lengths, and its callbacks. */
interface Inside {
  slab: Buffer;
  lens: Int32Array;
  port: number;
  onBatch(n: number): void;
  onSocketError(err: { code: string; errno: number }): void;
}
const inside = (s: NetlinkSocket): Inside => s as unknown as Inside;
const SLOT = 32 << 10;

/** One wake-up of the Reader: each entry a datagram, or -1 (truncated) / -2 (not from the kernel). */
function arrive(s: NetlinkSocket, datagrams: Array<Buffer | number>): void {
  const x = inside(s);
  datagrams.forEach((d, i) => {
    if (typeof d === 'number') {
      x.lens[i] = d;
    } else {
      d.copy(x.slab, i * SLOT);
      x.lens[i] = d.length;
    }
  });
  x.onBatch(datagrams.length);
}

const ip = (s: string): number => s.split('.').reduce((a, x) => (a << 8) | Number(x), 0) | 0;
const route = (dst: string, over: Partial<RouteMsg> = {}): RouteMsg => ({ family: AF_INET, dstLen: 24, srcLen: 0, tos: 0, table: 254, protocol: 4, scope: 0, type: 1, flags: 0, dst: ip(dst), oif: 7, gateway: ip('192.0.2.9'), ...over });

/** A message from the kernel: `seq`, and nlmsg_pid `pid` (a reply: our port; an event: 0 or another's). */
function fromKernel(msg: Buffer, seq: number, pid: number, flags?: number): Buffer {
  setSeq(msg, 0, seq);
  msg.writeUInt32LE(pid, 12);
  if (flags !== undefined) msg.writeUInt16LE(flags, 6);
  return msg;
}
function control(type: number, seq: number, pid: number, errno: number, extra = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(20 + (type === NLMSG_ERROR ? 16 : 0) + extra.length);
  b.writeUInt32LE(b.length, 0);
  b.writeUInt16LE(type, 4);
  b.writeInt32LE(-errno, 16);
  extra.copy(b, 20 + (type === NLMSG_ERROR ? 16 : 0));
  return fromKernel(b, seq, pid, type === NLMSG_ERROR ? 0x100 | (extra.length ? 0x200 : 0) : NLM_F_MULTI);
}
const cat = (...bs: Buffer[]): Buffer => Buffer.concat(bs);

let sent: Buffer[];
let sockets: NetlinkSocket[];
beforeEach(() => {
  sent = [];
  sockets = [];
  vi.spyOn(native, 'netlinkSend').mockImplementation((_fd: number, msg: Uint8Array) => {
    sent.push(Buffer.from(msg));
  });
});
afterEach(() => {
  for (const s of sockets) s.close();
  vi.restoreAllMocks();
});
function open(h: NetlinkHandlers = {}): { s: NetlinkSocket; port: number; errors: NetlinkError[]; events: number[] } {
  const errors: NetlinkError[] = [];
  const events: number[] = [];
  const s = new NetlinkSocket({ onEvent: (type) => void events.push(type), onError: (e) => void errors.push(e), ...h });
  sockets.push(s);
  return { s, port: inside(s).port, errors, events };
}
const DUMP_ROUTES = (): Buffer => encodeRoute(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, route('0.0.0.0', { dstLen: 0, dst: undefined, oif: undefined, gateway: undefined }));

describe('NetlinkSocket requests', () => {
  it('a dump over two datagrams: every reply to onReply, in order, resolved by NLMSG_DONE', async () => {
    const { s, port, events } = open();
    const got: number[] = [];
    const p = s.request('list routes', DUMP_ROUTES(), (type, b, off, len) => void got.push(decodeRoute(b, off, len).dst!), 1000);
    expect(sent).toHaveLength(1);
    const seq = msgSeq(sent[0]!, 0);
    expect(seq).not.toBe(0);
    const r = (d: string): Buffer => fromKernel(encodeRoute(RTM_NEWROUTE, 0, route(d)), seq, port, NLM_F_MULTI);
    arrive(s, [cat(r('198.51.100.0'), r('203.0.113.0')), cat(r('192.0.2.0'), control(NLMSG_DONE, seq, port, 0))]);
    await p;
    expect(got).toEqual([ip('198.51.100.0'), ip('203.0.113.0'), ip('192.0.2.0')]);
    expect(events).toEqual([]);
  });

  it("an ACK resolves; an error rejects with the errno's name, number and the kernel's text", async () => {
    const { s, port } = open();
    const add = (): Buffer => encodeRoute(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK, route('203.0.113.0'));
    const a = s.request('add route 203.0.113.0/24', add(), undefined, 1000);
    const b = s.request('add route 203.0.113.0/24', add(), undefined, 1000);
    const [sa, sb] = sent.map((m) => msgSeq(m, 0));
    expect(sa).not.toBe(sb);
    const text = Buffer.from('\x08\x00\x01\x00hi\x00\x00', 'latin1'); // NLMSGERR_ATTR_MSG "hi"
    arrive(s, [control(NLMSG_ERROR, sb!, port, 17, text), control(NLMSG_ERROR, sa!, port, 0)]);
    await expect(a).resolves.toBeUndefined();
    const err = await b.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NetlinkError);
    expect(err).toMatchObject({ code: 'EEXIST', errno: 17, op: 'add route 203.0.113.0/24', message: 'add route 203.0.113.0/24: EEXIST (hi)' });
  });

  it('what is not a pending reply of ours (an event, another port, an old seq) goes to onEvent; the request is undisturbed', async () => {
    const { s, port, events } = open();
    const p = s.request('x', encodeRoute(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK, route('203.0.113.0')), undefined, 1000);
    const seq = msgSeq(sent[0]!, 0);
    const ev = (type: number, sq: number, pid: number): Buffer => fromKernel(encodeRoute(type, 0, route('198.51.100.0')), sq, pid);
    arrive(s, [cat(ev(RTM_NEWROUTE, 0, 0), ev(RTM_DELROUTE, seq, port + 1), ev(RTM_NEWROUTE, seq + 5, port)), control(NLMSG_ERROR, seq, port, 0)]);
    await p;
    expect(events).toEqual([RTM_NEWROUTE, RTM_DELROUTE, RTM_NEWROUTE]);
  });

  it('no answer: ETIMEDOUT after the timeout, and a late answer is then an event', async () => {
    const { s, port, events } = open();
    const err = await s.request('route get 192.0.2.7', encodeRoute(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_ACK, route('192.0.2.7')), undefined, 20).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ETIMEDOUT', errno: 110, message: 'route get 192.0.2.7: ETIMEDOUT (no answer within 20 ms)' });
    arrive(s, [control(NLMSG_ERROR, msgSeq(sent[0]!, 0), port, 0)]);
    expect(events).toEqual([NLMSG_ERROR]);
  });

  it('one dump at a time: the second is sent once the first is done', async () => {
    const { s, port } = open();
    const one = s.request('dump 1', DUMP_ROUTES(), undefined, 1000);
    const two = s.request('dump 2', DUMP_ROUTES(), undefined, 1000);
    await Promise.resolve();
    expect(sent).toHaveLength(1);
    arrive(s, [control(NLMSG_DONE, msgSeq(sent[0]!, 0), port, 0)]);
    await one;
    await vi.waitFor(() => expect(sent).toHaveLength(2));
    expect(msgFlags(sent[1]!, 0) & NLM_F_DUMP).toBe(NLM_F_DUMP);
    arrive(s, [control(NLMSG_DONE, msgSeq(sent[1]!, 0), port, 0)]);
    await two;
  });

  it('a dump that fails in the kernel (NLMSG_DONE with an errno) rejects; close rejects what waits with ECANCELED', async () => {
    const { s, port } = open();
    const one = s.request('dump', DUMP_ROUTES(), undefined, 1000);
    arrive(s, [control(NLMSG_DONE, msgSeq(sent[0]!, 0), port, 16)]);
    await expect(one).rejects.toMatchObject({ code: 'EBUSY' });
    const two = s.request('add', encodeRoute(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK, route('203.0.113.0')), undefined, 1000);
    s.close();
    await expect(two).rejects.toMatchObject({ code: 'ECANCELED' });
    await expect(s.request('add', encodeRoute(RTM_NEWROUTE, NLM_F_REQUEST | NLM_F_ACK, route('203.0.113.0')), undefined, 1000)).rejects.toMatchObject({ code: 'ECANCELED' });
  });
});

describe('NetlinkSocket: bad input is reported (EBADMSG), never thrown', () => {
  it('a reply that does not parse fails its request with EBADMSG once the request is complete', async () => {
    const { s, port } = open();
    const p = s.request('list routes', DUMP_ROUTES(), (_t, b, off, len) => void decodeRoute(b, off, len), 1000);
    const seq = msgSeq(sent[0]!, 0);
    const bad = fromKernel(encodeRoute(RTM_NEWROUTE, 0, route('198.51.100.0')), seq, port, NLM_F_MULTI);
    bad.writeUInt16LE(5, 28); // RTA_DST of 1 byte
    arrive(s, [cat(bad, control(NLMSG_DONE, seq, port, 0))]);
    await expect(p).rejects.toMatchObject({ code: 'EBADMSG', message: expect.stringMatching(/^list routes: EBADMSG \(malformed netlink message: rtmsg: attribute 1 of 1 bytes, not 4\)$/) });
  });

  it('garbage framing, a truncated datagram, one not from the kernel, an event handler that throws: each reported, the batch goes on', async () => {
    const { s, port, errors, events } = open({ onEvent: (type) => {
      if (type === RTM_DELROUTE) throw new Error('handler broke');
    } });
    const garbage = Buffer.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]);
    const ok = fromKernel(encodeRoute(RTM_DELROUTE, 0, route('198.51.100.0')), 0, 0);
    expect(() => arrive(s, [garbage, -1, -2, ok])).not.toThrow();
    expect(errors.map((e) => [e.code, e.message])).toEqual([
      ['EBADMSG', expect.stringMatching(/nlmsg_len 67305985 with 17 bytes left/)],
      ['EBADMSG', expect.stringMatching(/a datagram larger than 32768 bytes/)],
      ['EBADMSG', expect.stringMatching(/a datagram not sent by the kernel/)],
      ['EBADMSG', expect.stringMatching(/handler broke/)],
    ]);
    expect(events).toEqual([]);
    // A truncated reply whose header names a pending request fails that request.
    const p = s.request('list routes', DUMP_ROUTES(), undefined, 1000);
    const head = fromKernel(encodeRoute(RTM_NEWROUTE, 0, route('198.51.100.0')), msgSeq(sent[0]!, 0), port);
    inside(s).slab.fill(0);
    head.copy(inside(s).slab, 0);
    inside(s).lens[0] = -1;
    inside(s).onBatch(1);
    await expect(p).rejects.toMatchObject({ code: 'EMSGSIZE' });
  });

  it('a socket error (ENOBUFS) is reported with its own code', () => {
    const { s, errors } = open();
    inside(s).onSocketError({ code: 'ENOBUFS', errno: 105 });
    expect(errors.map((e) => [e.code, e.errno, e.message])).toEqual([['ENOBUFS', 105, 'netlink socket: ENOBUFS']]);
  });
});

describe('RouteWatch over the socket', () => {
  function watch(): { w: RouteWatch; s: NetlinkSocket; seen: Array<[RouteEvent[], boolean]>; errs: string[] } {
    vi.spyOn(native, 'netlinkJoin').mockImplementation(() => {});
    const seen: Array<[RouteEvent[], boolean]> = [];
    const errs: string[] = [];
    const w = new RouteWatch({ onRoutes: (e, d) => void seen.push([e, d]), onError: (e) => void errs.push(e) });
    const s = (w as unknown as { sock: NetlinkSocket }).sock;
    sockets.push(s);
    return { w, s, seen, errs };
  }
  const dumpDone = (s: NetlinkSocket, k: number, routes: RouteMsg[]): void => {
    const { port } = inside(s);
    const seq = msgSeq(sent[k]!, 0);
    expect(msgType(sent[k]!, 0)).toBe(RTM_GETROUTE);
    arrive(s, [cat(...routes.map((r) => fromKernel(encodeRoute(RTM_NEWROUTE, 0, r), seq, port, NLM_F_MULTI)), control(NLMSG_DONE, seq, port, 0))]);
  };

  it('the dump (unicast only), then the events of one wake-up together; garbage counted; ENOBUFS dumps again', async () => {
    const { w, s, seen, errs } = watch();
    const started = w.start();
    dumpDone(s, 0, [route('198.51.100.0'), route('203.0.113.0', { type: 6, oif: undefined, gateway: undefined })]);
    await started;
    expect(seen).toEqual([[[{ kind: 'add', dst: ip('198.51.100.0'), dstLen: 24, gateway: ip('192.0.2.9'), oif: 7, table: 254 }], true]]);
    const ev = (type: number, dst: string): Buffer => fromKernel(encodeRoute(type, 0, route(dst, { tableId: 1000 })), 0, 0);
    arrive(s, [cat(ev(RTM_NEWROUTE, '203.0.113.0'), ev(RTM_DELROUTE, '198.51.100.0')), Buffer.from('junk')]);
    expect(seen[1]).toEqual([[expect.objectContaining({ kind: 'add', table: 1000 }), expect.objectContaining({ kind: 'del', dst: ip('198.51.100.0') })], false]);
    expect(errs).toEqual([expect.stringMatching(/^route message that does not parse: .*4 bytes left, less than a header/)]);
    inside(s).onSocketError({ code: 'ENOBUFS', errno: 105 });
    expect(errs[1]).toBe('route socket: ENOBUFS');
    await vi.waitFor(() => expect(sent).toHaveLength(2));
    dumpDone(s, 1, [route('192.0.2.0')]);
    await vi.waitFor(() => expect(w.dumps).toBe(2));
    expect(seen[2]).toEqual([[expect.objectContaining({ dst: ip('192.0.2.0') })], true]);
    expect([w.events, w.errors]).toEqual([2, 2]);
    w.close();
  });
});
