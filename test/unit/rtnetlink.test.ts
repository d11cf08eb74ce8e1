/**
 * src/tun/rtnetlink.ts, the messages: encode -> decode round trips of every family header with
 * fast-check (also from a poisoned buffer at an odd offset); the kernel's own replies, captured
 * from a network namespace (kernel 6.18, x86-64: little-endian) by sending the encoded requests
 * on a NETLINK_ROUTE socket and printing each datagram as hex; and malformed input, which every
 * decoder rejects with MalformedMessage (code EBADMSG) and nothing else.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  AF_INET,
  checkMessage,
  decodeAddr,
  decodeDone,
  decodeError,
  decodeLink,
  decodeNeigh,
  decodeRoute,
  encodeAddr,
  encodeLink,
  encodeNeigh,
  encodeRoute,
  MalformedMessage,
  msgFlags,
  msgPid,
  msgSeq,
  msgType,
  NLM_F_ACK,
  NLM_F_CREATE,
  NLM_F_REQUEST,
  NLMSG_DONE,
  NLMSG_ERROR,
  routeTable,
  RTM_NEWADDR,
  RTM_NEWLINK,
  RTM_NEWNEIGH,
  RTM_NEWROUTE,
  setSeq,
  type AddrMsg,
  type LinkMsg,
  type NeighMsg,
  type RouteMsg,
} from '../../src/tun/rtnetlink.js';

const u8 = fc.integer({ min: 0, max: 255 });
const u16 = fc.integer({ min: 0, max: 0xffff });
const u32 = fc.integer({ min: 0, max: 0xffffffff });
const i32 = fc.integer({ min: -0x80000000, max: 0x7fffffff });
const opt = <T>(a: fc.Arbitrary<T>): fc.Arbitrary<T | undefined> => fc.option(a, { nil: undefined });

const links: fc.Arbitrary<LinkMsg> = fc.record({
  family: u8, type: u16, index: i32, flags: u32, change: u32,
  name: opt(fc.string({ minLength: 0, maxLength: 15, unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789.-_'.split('')) })),
  mtu: opt(u32), txqlen: opt(u32),
});
const addrs: fc.Arbitrary<AddrMsg> = fc.record({ family: fc.constant(AF_INET), prefixLength: fc.integer({ min: 0, max: 32 }), flags: u8, scope: u8, index: u32, local: opt(i32), address: opt(i32) });
const routes: fc.Arbitrary<RouteMsg> = fc.record({
  family: fc.constant(AF_INET), dstLen: fc.integer({ min: 0, max: 32 }), srcLen: fc.integer({ min: 0, max: 32 }), tos: u8, table: u8, protocol: u8, scope: u8, type: u8, flags: u32,
  dst: opt(i32), src: opt(i32), oif: opt(u32), gateway: opt(i32), priority: opt(u32), tableId: opt(u32),
});
const neighs: fc.Arbitrary<NeighMsg> = fc.record({
  family: fc.constant(AF_INET), ifindex: i32, state: u16, flags: u8, type: u8, dst: opt(i32),
  lladdr: opt(fc.uint8Array({ minLength: 0, maxLength: 32 }).map((a) => Buffer.from(a))),
});

/** The message copied to offset 7 of a buffer of 0xA5 bytes with more of them after it. */
function poisoned(msg: Buffer): { b: Buffer; off: number } {
  const b = Buffer.alloc(msg.length + 7 + 13, 0xa5);
  msg.copy(b, 7);
  return { b, off: 7 };
}

function roundTrip<T>(arb: fc.Arbitrary<T>, type: number, encode: (type: number, flags: number, m: T) => Buffer, decode: (b: Buffer, off: number, len: number) => T): void {
  fc.assert(
    fc.property(arb, u32, (m, seq) => {
      const msg = encode(type, NLM_F_REQUEST | NLM_F_ACK, m);
      setSeq(msg, 0, seq);
      const { b, off } = poisoned(msg);
      const len = checkMessage(b, off, off + msg.length);
      expect(len).toBe(msg.length);
      expect(len % 4).toBe(0);
      expect([msgType(b, off), msgFlags(b, off), msgSeq(b, off), msgPid(b, off)]).toEqual([type, NLM_F_REQUEST | NLM_F_ACK, seq, 0]);
      expect(decode(b, off, len)).toEqual(m);
    }),
    { numRuns: 2000 },
  );
}

describe('round trips: encode, then decode at an offset in a poisoned buffer', () => {
  it('links (ifinfomsg, IFLA_IFNAME/MTU/TXQLEN)', () => roundTrip(links, RTM_NEWLINK, encodeLink, decodeLink));
  it('addresses (ifaddrmsg, IFA_LOCAL/ADDRESS)', () => roundTrip(addrs, RTM_NEWADDR, encodeAddr, decodeAddr));
  it('routes (rtmsg, RTA_DST/SRC/OIF/GATEWAY/PRIORITY/TABLE)', () => roundTrip(routes, RTM_NEWROUTE, encodeRoute, decodeRoute));
  it('neighbours (ndmsg, NDA_DST/LLADDR)', () => roundTrip(neighs, RTM_NEWNEIGH, encodeNeigh, decodeNeigh));
});

/** The kernel's replies (see the file's comment); requests had seq 1000, the socket port 0x4531. */
const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const ip = (s: string): number => s.split('.').reduce((a, x) => (a << 8) | Number(x), 0) | 0;

/** Every message of one datagram, framed by checkMessage. */
function messages(b: Buffer): Array<{ type: number; off: number; len: number }> {
  const out = [];
  for (let off = 0; off < b.length; ) {
    const len = checkMessage(b, off, b.length);
    out.push({ type: msgType(b, off), off, len });
    off += (len + 3) & ~3;
  }
  return out;
}

describe("the kernel's replies", () => {
  it('a route dump: one datagram of four RTM_NEWROUTE, then NLMSG_DONE 0', () => {
    // `ip route add 198.51.100.0/24 via 192.0.2.2 dev d0 table 1000 proto 77 metric 5`, then
    // the kernel's own routes of 192.0.2.1/24 on d0 (ifindex 3) in main and local.
    const b = hex(`4400000018000200e80300003145000002180000fc4d00010000000008000f00e803000008000100c6336400
      080006000500000008000500c000020208000400030000003c00000018000200e80300003145000002180000fe02fd0100000000
      08000f00fe00000008000100c000020008000700c000020108000400030000003c00000018000200e80300003145000002200000
      ff02fe020000000008000f00ff00000008000100c000020108000700c000020108000400030000003c00000018000200e8030000
      3145000002200000ff02fd030000000008000f00ff00000008000100c00002ff08000700c00002010800040003000000`);
    const ms = messages(b);
    expect(ms.map((m) => m.type)).toEqual([RTM_NEWROUTE, RTM_NEWROUTE, RTM_NEWROUTE, RTM_NEWROUTE]);
    expect(msgSeq(b, 0)).toBe(1000);
    expect(msgPid(b, 0)).toBe(0x4531);
    const r = decodeRoute(b, ms[0]!.off, ms[0]!.len);
    expect(r).toMatchObject({ family: AF_INET, dstLen: 24, table: 252, tableId: 1000, protocol: 77, scope: 0, type: 1, dst: ip('198.51.100.0'), gateway: ip('192.0.2.2'), oif: 3, priority: 5 });
    expect(routeTable(r)).toBe(1000);
    expect(decodeRoute(b, ms[1]!.off, ms[1]!.len)).toMatchObject({ dstLen: 24, table: 254, protocol: 2, scope: 253, type: 1, dst: ip('192.0.2.0'), gateway: undefined, oif: 3 });
    expect(decodeRoute(b, ms[2]!.off, ms[2]!.len)).toMatchObject({ dstLen: 32, table: 255, type: 2, dst: ip('192.0.2.1') });
    const done = hex('1400000003000200e80300003145000000000000');
    expect(msgType(done, 0)).toBe(NLMSG_DONE);
    expect(decodeDone(done, 0, checkMessage(done, 0, done.length))).toBe(0);
  });

  it('a route get (ip route get 198.51.100.7 from 192.0.2.1): RTM_NEWROUTE with RTA_CACHEINFO, then a capped ACK', () => {
    const b = hex(`7000000018000000e80300003145000002202000fe0000010002000008000f00fe00000008000100c6336407
      08000200c0000201080004000300000008000500c0000202080019000000000024000c00020000000000000000000000000000
      0000000000000000000000000000000000`);
    expect(decodeRoute(b, 0, checkMessage(b, 0, b.length))).toMatchObject({ dst: ip('198.51.100.7'), src: ip('192.0.2.1'), oif: 3, gateway: ip('192.0.2.2'), tableId: 254 });
    const ack = hex('2400000002000001e803000031450000000000002c0000001a000500e803000000000000');
    expect(msgType(ack, 0)).toBe(NLMSG_ERROR);
    expect(decodeError(ack, 0, checkMessage(ack, 0, ack.length))).toEqual({ errno: 0, message: undefined });
  });

  it('an error with the kernel\'s reason (extended ACK): EEXIST, "ipv4: Address already assigned"', () => {
    const b = hex(`4800000002000003e803000031450000efffffff2800000014000506e80300000000000023000100697076343a20
      4164647265737320616c72656164792061737369676e65640000`);
    expect(decodeError(b, 0, checkMessage(b, 0, b.length))).toEqual({ errno: 17, message: 'ipv4: Address already assigned' });
  });

  it('an address dump entry: 192.0.2.1/24 on ifindex 3, with IFA_LABEL and IFA_CACHEINFO skipped', () => {
    const b = hex(`4c00000014000200e803000031450000021880000300000008000100c000020108000200c00002010700030064300000
      080008008000000014000600ffffffffffffffff3839110038391100`);
    expect(decodeAddr(b, 0, checkMessage(b, 0, b.length))).toEqual({ family: AF_INET, prefixLength: 24, flags: 0x80, scope: 0, index: 3, local: ip('192.0.2.1'), address: ip('192.0.2.1') });
  });

  it('a neighbour dump: 192.0.2.2 PERMANENT with its MAC, then DONE in the same datagram', () => {
    const b = hex(`4c0000001c000200e80300003145000002000000030000008000000108000100c00002020a000200020000000002
      0000080004000000000014000300320000003200000032000000000000001400000003000200e80300003145000000000000`);
    const ms = messages(b);
    expect(ms.map((m) => m.type)).toEqual([RTM_NEWNEIGH, NLMSG_DONE]);
    const n = decodeNeigh(b, ms[0]!.off, ms[0]!.len);
    expect(n).toEqual({ family: AF_INET, ifindex: 3, state: 0x80, flags: 0, type: 1, dst: ip('192.0.2.2'), lladdr: Buffer.from([2, 0, 0, 0, 0, 2]) });
    b.fill(0); // the decoded MAC is a copy: the reader's slab is reused
    expect(n.lladdr).toEqual(Buffer.from([2, 0, 0, 0, 0, 2]));
  });

  it('a link (lo, ifindex 1): name, MTU, queue length and IFF_UP among ~50 attributes, nested ones included', () => {
    const b = hex(LO_LINK);
    const m = decodeLink(b, 0, checkMessage(b, 0, b.length));
    expect(m).toMatchObject({ index: 1, name: 'lo', mtu: 65536, txqlen: 1000, type: 772 });
    expect(m.flags & 1).toBe(0); // lo is down in a fresh namespace
  });
});

describe('malformed messages: MalformedMessage (EBADMSG), never another error', () => {
  const route = encodeRoute(RTM_NEWROUTE, 0, { family: AF_INET, dstLen: 24, srcLen: 0, tos: 0, table: 254, protocol: 4, scope: 0, type: 1, flags: 0, dst: ip('203.0.113.0'), oif: 7 });

  it('a header cut short, nlmsg_len below 16, or past the end of the datagram', () => {
    expect(() => checkMessage(route, 0, 15)).toThrow(MalformedMessage);
    const small = Buffer.from(route);
    small.writeUInt32LE(12, 0);
    expect(() => checkMessage(small, 0, small.length)).toThrow(/nlmsg_len 12/);
    expect(() => checkMessage(route, 0, route.length - 4)).toThrow(/nlmsg_len 44 with 40 bytes left/);
  });

  it('a family header cut short, an attribute overrunning its message, an address attribute of 3 bytes', () => {
    expect(() => decodeRoute(route, 0, 16 + 8)).toThrow(/rtmsg: 24 bytes, too short/);
    const over = Buffer.from(route);
    over.writeUInt16LE(200, 28); // RTA_DST's rta_len
    expect(() => decodeRoute(over, 0, over.length)).toThrow(/rtmsg: attribute of length 200/);
    const odd = Buffer.from(route);
    odd.writeUInt16LE(7, 28);
    expect(() => decodeRoute(odd, 0, odd.length)).toThrow(/rtmsg: attribute 1 of 3 bytes, not 4/);
    expect(new MalformedMessage('x').code).toBe('EBADMSG');
  });

  it('random bytes: every decoder either decodes or throws MalformedMessage', () => {
    const decoders = [decodeLink, decodeAddr, decodeRoute, decodeNeigh, decodeError];
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 120 }), fc.nat({ max: 4 }), (bytes, k) => {
        const b = Buffer.from(bytes);
        try {
          decoders[k]!(b, 0, checkMessage(b, 0, b.length));
        } catch (err) {
          expect(err).toBeInstanceOf(MalformedMessage);
        }
      }),
      { numRuns: 20_000 },
    );
  });

  it('valid messages truncated anywhere, their length fields kept: never past the bytes there are', () => {
    fc.assert(
      fc.property(routes, fc.nat(), (m, cut) => {
        const msg = encodeRoute(RTM_NEWROUTE, NLM_F_CREATE, m);
        const end = cut % msg.length;
        expect(() => decodeRoute(msg, 0, checkMessage(msg, 0, end))).toThrow(MalformedMessage);
      }),
      { numRuns: 2000 },
    );
  });
});

// `ip link` lo in a fresh namespace: RTM_NEWLINK, 1468 bytes (the reply to an RTM_GETLINK for ifindex 1).
const LO_LINK = `bc05000010000000e8030000ef47000000000403010000000800000000000000070003006c6f000008000d00e80300000500
1000020000000500110000000000050043000100000008000400000001000800320000000000080033000000000008001b00
0000000008001e000000000008003d000000000008001f000100000008002800ffff0000080029000000010008003a000000
010008003f0000000100080040000000010008003b00f8ff070008003c00ffff000008004200000000000800200001000000
0500210001000000080023000000000008002f00000000000800300000000000060044000000000006004500000000000500
2700000000000a00010000000000000000000a0002000000000000000000cc00170000000000000000000000000000000000
0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
0000000000000000000000000000000000000000000000000000000000000000000064000700000000000000000000000000
0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
000000000000000000000000000000000000000000000000000000000000000000000c002b00050002000000000009000600
6e6f6f700000000030031a008c00020088000100010000000000000000000000010000000100000001000000010000000000
0000010000000000000000000000000000000000000000000000010000000100000000000000000000000000000000000000
00000000000000000000000000000000000000000000000010270000e8030000000000000000000000000000000000000100
0000a0020a00080001000000000014000500ffff000002431100405d0000e8030000f4000200000000004000000000000100
01000000010000000100000001000000ffffffffa00f0000e8030000ffffffff803a09008051010003000000580200001000
00000000000001000000010000000100000060ea0000000000000000000000000000000000000000000000000000ffffffff
000000000000000010270000e803000001000000000000000000000001000000000000000000000001000000000000000000
0000000000000000000080ee3600000000000000000001000000000000000000000000000000000000000000000000040000
00000000ffff0000ffffffff0100000000000000000000000000000034010300260000000000000000000000000000000000
0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000
0000000000000000000000000000000000000000000000000000000000000000000000003c00060007000000000000000000
0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000014000700
00000000000000000000000000000000050008000000000024000e0000000000000000000000000000000000000000000000
0000000000000000000004003e8004004180`;
