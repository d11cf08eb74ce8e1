/**
 * The native side of the multi-queue data path (io.queues > 1) against the real kernel, inside a
 * network namespace this test creates and always deletes. The child fixture
 * (test/fixtures/steer-child.ts, run from dist/ after `npm run build`) does the I/O and reports
 * what it saw; the datagrams, the reference model of the steering hash
 * (test/helpers/steering-model.ts) and every assertion are here.
 *
 *   root namespace: nothing but `ip netns add/del stq-<pid>-<random>`
 *
 *   stq-<pid>-<random>
 *   +-------------------------------------------------------------------------------+
 *   |  stq0: TUN with IFF_MULTI_QUEUE, opened twice (fds A and B), 198.51.100.1/24  |
 *   |     UDP 198.51.100.1:* -> 198.51.100.2:9 (32 flows) -> Reader(A), Reader(B)    |
 *   |     writeTun(A), writeTun(B) -> dgram 198.51.100.1:5000                        |
 *   |  stq1: single-queue TUN (a multi-queue open of its name is refused)           |
 *   |  lo 192.0.2.1/32, 192.0.2.2/32                                                |
 *   |     raw@192.0.2.1 --sendRaw, IP_HDRINCL--> raw@192.0.2.2: a control (no       |
 *   |     filter), {index 0, count 1}, and {index i, count n} for n = 2, 3, 5, 8      |
 *   +-------------------------------------------------------------------------------+
 *
 * 1. openTun({multiQueue: true}) twice on one name: two fds, one device with two queues; a
 *    plain open of that name fails with EINVAL (as the kernel says), and so does a multi-queue
 *    open of a single-queue device's name; both fds read (the kernel spreads flows over them,
 *    each flow on one queue) and write; the device goes away only when both fds are closed.
 * 2. The steering filter: several thousand hand-made IPIP datagrams (many TCP and UDP flows,
 *    ICMP and other inner protocols, inner fragments, inner IP options, truncated inner headers,
 *    TCP whose port bytes are cut off, outer IP options) reach the control socket intact, and
 *    each one reaches exactly one socket of each steered group: the one the model predicts.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';

import { expectCleanRun, runFixtureInNetns, type ChildReport, type ChildResult } from '../helpers/child-fixture.js';
import { integrationSkip } from '../helpers/skip.js';
import { refChecksum, rng } from '../helpers/packets.js';
import { flowHash, queueOf, steer, type SteerPath } from '../helpers/steering-model.js';

const FIXTURE = fileURLToPath(new URL('../../dist/test/fixtures/steer-child.js', import.meta.url));

const COUNTS = [2, 3, 5, 8];

// ---------------------------------------------------------------------------------------------
// Hand-made IPIP datagrams (outer IPv4 protocol 4, 192.0.2.1 -> 192.0.2.2; the outer ID names
// the datagram). Checksums by the book, so the kernel takes them as they are.

interface Crafted {
  id: number;
  kind: string;
  bytes: Buffer;
}

interface InnerSpec {
  src: number;
  dst: number;
  proto: number;
  /** Inner IHL in 32-bit words (5..15); options are NOPs. */
  ihl?: number;
  /** The flags + fragment offset field. */
  frag?: number;
  /** What follows the inner header (ports first, for TCP and UDP). */
  l4: Buffer;
}

const DOC_NETS = [0xc0000200, 0xc6336400, 0xcb007100]; // 192.0.2.0, 198.51.100.0, 203.0.113.0

function craft(id: number, kind: string, inner: InnerSpec, opts: { outerWords?: number; cutTo?: number } = {}): Crafted {
  const ihl = inner.ihl ?? 5;
  const innerLen = ihl * 4 + inner.l4.length;
  const outerLen = 20 + (opts.outerWords ?? 0) * 4;
  const full = Buffer.alloc(outerLen + innerLen);
  // Inner header.
  const i = outerLen;
  full[i] = 0x40 | ihl;
  full.writeUInt16BE(innerLen, i + 2);
  full.writeUInt16BE((id * 7919) & 0xffff, i + 4);
  full.writeUInt16BE(inner.frag ?? 0x4000, i + 6);
  full[i + 8] = 63;
  full[i + 9] = inner.proto;
  full.writeUInt32BE(inner.src >>> 0, i + 12);
  full.writeUInt32BE(inner.dst >>> 0, i + 16);
  full.fill(0x01, i + 20, i + ihl * 4); // NOP options
  full.writeUInt16BE(refChecksum(full, i, ihl * 4), i + 10);
  inner.l4.copy(full, i + ihl * 4);
  const d = opts.cutTo === undefined ? full : full.subarray(0, opts.cutTo);
  // Outer header (for its final length).
  d[0] = 0x40 | (outerLen / 4);
  d[1] = 0;
  d.writeUInt16BE(d.length, 2);
  d.writeUInt16BE(id, 4);
  d.writeUInt16BE(0x4000, 6);
  d[8] = 64;
  d[9] = 4;
  d.writeUInt16BE(0, 10);
  d.writeUInt32BE(0xc0000201, 12);
  d.writeUInt32BE(0xc0000202, 16);
  d.fill(0x01, 20, outerLen); // NOP options
  d.writeUInt16BE(refChecksum(d, 0, outerLen), 10);
  return { id, kind, bytes: Buffer.from(d) };
}

/** Every datagram the test sends, from a seeded PRNG (the same set on every run). */
function datagrams(): Crafted[] {
  const r = rng(0x5eed);
  const addr = (): number => (DOC_NETS[r() % 3]! | (r() & 0xff)) >>> 0;
  const port = (): number => r() & 0xffff;
  const bytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => r() & 0xff));
  /** Ports then a TCP (20 bytes) or UDP (8 bytes) header's rest and some payload. */
  const l4 = (proto: number, sport = port(), dport = port()): Buffer => {
    const hdr = Buffer.alloc(proto === 6 ? 20 : 8);
    hdr.writeUInt16BE(sport, 0);
    hdr.writeUInt16BE(dport, 2);
    if (proto === 6) {
      hdr.writeUInt32BE(r(), 4);
      hdr[12] = 0x50;
      hdr[13] = 0x18;
    } else hdr.writeUInt16BE(8 + 16, 4);
    return Buffer.concat([hdr, bytes(16)]);
  };
  const out: Crafted[] = [];
  const add = (kind: string, inner: InnerSpec, opts?: { outerWords?: number; cutTo?: number }): void => {
    out.push(craft(out.length + 1, kind, inner, opts));
  };
  const tcpOrUdp = (k: number): number => (k % 2 === 0 ? 6 : 17);

  // Many TCP and UDP flows: distinct addresses and ports, DF set or not.
  for (let k = 0; k < 800; k++) add('tcp', { src: addr(), dst: addr(), proto: 6, frag: k % 3 === 0 ? 0 : 0x4000, l4: l4(6) });
  for (let k = 0; k < 800; k++) add('udp', { src: addr(), dst: addr(), proto: 17, frag: k % 3 === 0 ? 0 : 0x4000, l4: l4(17) });
  // One flow between two fixed hosts, many port pairs: only the ports tell them apart.
  const [fa, fb] = [0xc633640a, 0xcb00710a];
  for (let k = 0; k < 200; k++) add('ports-only', { src: fa, dst: fb, proto: tcpOrUdp(k), l4: l4(tcpOrUdp(k), 40000 + k, 5201) });
  // TCP between two fixed hosts from even source ports only, as Linux's connect() picks them:
  // the hash must still spread these over every queue.
  for (let k = 0; k < 128; k++) add('even-ports', { src: fa, dst: fb, proto: 6, l4: l4(6, 32768 + 2 * k, 5201) });
  // The reserved flag bit is no fragment: ports count.
  for (let k = 0; k < 40; k++) add('reserved-bit', { src: addr(), dst: addr(), proto: tcpOrUdp(k), frag: 0x8000, l4: l4(tcpOrUdp(k)) });
  // ICMP (its type, code and checksum sit where ports would) and other protocols (SCTP has
  // ports there too, GRE a header): no ports.
  for (let k = 0; k < 150; k++) add('icmp', { src: addr(), dst: addr(), proto: 1, l4: Buffer.concat([Buffer.from([8, 0]), bytes(2), bytes(20)]) });
  for (let k = 0; k < 90; k++) add('other-proto', { src: addr(), dst: addr(), proto: [132, 47, 50][k % 3]!, l4: l4(17) });
  // Inner fragments: MF set (first fragment, ports present but not used), a non-zero offset
  // (later fragments: what follows the header is data), both.
  for (let k = 0; k < 150; k++) add('frag-first', { src: addr(), dst: addr(), proto: tcpOrUdp(k), frag: 0x2000, l4: l4(tcpOrUdp(k)) });
  for (let k = 0; k < 150; k++) add('frag-last', { src: addr(), dst: addr(), proto: tcpOrUdp(k), frag: 1 + (r() % 0x1fff), l4: bytes(32) });
  for (let k = 0; k < 100; k++) add('frag-middle', { src: addr(), dst: addr(), proto: tcpOrUdp(k), frag: 0x2000 | (1 + (r() % 0x1fff)), l4: bytes(32) });
  // Inner IP options: IHL 6 and 15, the ports after the options.
  for (let k = 0; k < 200; k++) add('inner-ihl6', { src: addr(), dst: addr(), proto: tcpOrUdp(k), ihl: 6, l4: l4(tcpOrUdp(k)) });
  for (let k = 0; k < 60; k++) add('inner-ihl15', { src: addr(), dst: addr(), proto: tcpOrUdp(k), ihl: 15, l4: l4(tcpOrUdp(k)) });
  // Inner header truncated: outer + 0..19 bytes, each length several times.
  for (let k = 0; k < 80; k++) add('short', { src: addr(), dst: addr(), proto: tcpOrUdp(k), l4: l4(tcpOrUdp(k)) }, { cutTo: 20 + (k % 20) });
  // TCP/UDP with a whole inner header but 0..3 of the 4 port bytes (IHL 5 and IHL 6).
  for (let k = 0; k < 80; k++) add('ports-cut', { src: addr(), dst: addr(), proto: tcpOrUdp(k >> 2), l4: l4(tcpOrUdp(k >> 2)) }, { cutTo: 40 + (k % 4) });
  for (let k = 0; k < 40; k++) add('ports-cut-ihl6', { src: addr(), dst: addr(), proto: tcpOrUdp(k >> 2), ihl: 6, l4: l4(tcpOrUdp(k >> 2)) }, { cutTo: 44 + (k % 4) });
  // Exactly the 4 port bytes and nothing more: ports count.
  for (let k = 0; k < 40; k++) add('ports-exact', { src: addr(), dst: addr(), proto: tcpOrUdp(k), l4: l4(tcpOrUdp(k)) }, { cutTo: 44 });
  // Outer IP options (outer IHL 6 and 8): everything moves by 4 or 12 bytes.
  for (let k = 0; k < 150; k++) add('outer-options', { src: addr(), dst: addr(), proto: tcpOrUdp(k), l4: l4(tcpOrUdp(k)) }, { outerWords: k % 2 === 0 ? 1 : 3 });
  for (let k = 0; k < 40; k++) add('outer-options-frag', { src: addr(), dst: addr(), proto: tcpOrUdp(k), frag: 0x2000, l4: l4(tcpOrUdp(k)) }, { outerWords: 1 });
  // With outer options, a length that would hold an inner header after a plain outer one.
  for (let k = 0; k < 40; k++) add('outer-options-short', { src: addr(), dst: addr(), proto: tcpOrUdp(k), l4: l4(tcpOrUdp(k)) }, { outerWords: 1, cutTo: 24 + (k % 20) });
  return out;
}

/** What each kind must exercise in the model (a check that the datagrams are what they say). */
const PATHS: Record<string, SteerPath> = {
  tcp: 'ports', udp: 'ports', 'ports-only': 'ports', 'even-ports': 'ports', 'reserved-bit': 'ports', icmp: 'no-ports', 'other-proto': 'no-ports',
  'frag-first': 'no-ports', 'frag-last': 'no-ports', 'frag-middle': 'no-ports', 'inner-ihl6': 'ports', 'inner-ihl15': 'ports',
  short: 'short', 'ports-cut': 'no-ports', 'ports-cut-ihl6': 'no-ports', 'ports-exact': 'ports', 'outer-options': 'ports',
  'outer-options-frag': 'no-ports', 'outer-options-short': 'short',
};

/**
 * Wrong models a buggy filter could implement, to show that each kind of datagram tells the
 * right one apart: no length check and ports always taken (bytes past the end read as zero);
 * ports right after a fixed 20-byte inner header; a fixed 20-byte outer header.
 */
function wrongQueue(d: Buffer, count: number, how: 'always-ports' | 'inner-20' | 'outer-20'): number {
  const b = Buffer.concat([d, Buffer.alloc(80)]);
  const right = steer(d, count);
  const outer = how === 'outer-20' ? 20 : (d[0]! & 15) * 4;
  if (how === 'outer-20' && d.length < outer + 20) return 0;
  const src = b.readUInt32BE(outer + 12);
  const dst = b.readUInt32BE(outer + 16);
  const innerHdr = how === 'inner-20' ? 20 : (b[outer]! & 15) * 4;
  let withPorts: boolean;
  if (how === 'always-ports') withPorts = true;
  else if (how === 'inner-20') withPorts = right.path === 'ports';
  else withPorts = (b.readUInt16BE(outer + 6) & 0x3fff) === 0 && [6, 17].includes(b[outer + 9]!) && d.length >= outer + innerHdr + 4;
  return queueOf(flowHash(src, dst, withPorts ? b.readUInt32BE(outer + innerHdr) : 0), count);
}

// ---------------------------------------------------------------------------------------------

interface ErrShape { threw: boolean; name?: string; code?: string; errno?: number; syscall?: string; message?: string }
interface LinkShape { count: number; numqueues: number | null; multiQueue: boolean | null }
interface Report extends ChildReport {
  multiQueue: {
    names: string[];
    distinctFds: boolean;
    whileOpen: LinkShape | null;
    singleOnMulti: ErrShape;
    afterRefused: LinkShape | null;
    seen: Array<Array<{ sport: number; seq: number }>>;
    written: number[];
    got: Array<{ port: number; payload: string }>;
    afterFirstClose: LinkShape | null;
    afterBothClosed: LinkShape | null;
    multiOnSingle: ErrShape;
    notBoolean: ErrShape;
  };
  steering: {
    sent: number;
    failed: number;
    lastErrno: number;
    sockets: Array<{ label: string; steer: { index: number; count: number } | null; ids: number[] }>;
    bytes: Record<string, string>;
    errors: unknown[];
    badSteer: Record<string, ErrShape>;
  };
}

const SOCKETS = [
  { label: 'control' },
  { label: 'count1', steer: { index: 0, count: 1 } },
  ...COUNTS.flatMap((count) => Array.from({ length: count }, (_, index) => ({ label: `q${index}/${count}`, steer: { index, count } }))),
];

const skipReason = integrationSkip('steering.test.ts');

describe.skipIf(skipReason)('multi-queue TUN and underlay steering (native, in a private network namespace)', () => {
  const sent = datagrams();
  let child: ChildResult;
  let r: Report;

  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ipipd-steer-'));
    try {
      const input = join(dir, 'input.json');
      writeFileSync(input, JSON.stringify({ datagrams: sent.map((d) => d.bytes.toString('hex')), sockets: SOCKETS }));
      ({ child, report: r } = await runFixtureInNetns<Report>(FIXTURE, 'stq', [input], 60_000));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the child ran every step inside the namespace and exited by itself', () => {
    expectCleanRun(child, r);
  });

  describe('openTun with multiQueue', () => {
    it('two opens of one name give two fds on one device with two queues', () => {
      const m = r.multiQueue;
      expect(m.names).toEqual(['stq0', 'stq0']);
      expect(m.distinctFds).toBe(true);
      expect(m.whileOpen).toEqual({ count: 1, numqueues: 2, multiQueue: true });
    });

    it('a plain open of a multi-queue name, and a multi-queue open of a plain one, fail with EINVAL', () => {
      const m = r.multiQueue;
      // What the kernel says (tun_set_iff: IFF_MULTI_QUEUE must match the device's).
      expect(m.singleOnMulti).toMatchObject({ threw: true, code: 'EINVAL', errno: 22, syscall: 'ioctl' });
      expect(m.singleOnMulti.message).toContain('stq0');
      expect(m.afterRefused).toEqual({ count: 1, numqueues: 2, multiQueue: true });
      expect(m.multiOnSingle).toMatchObject({ threw: true, code: 'EINVAL', errno: 22, syscall: 'ioctl' });
      expect(m.notBoolean).toMatchObject({ threw: true, name: 'TypeError' });
    });

    it('both fds read: the kernel spreads flows over the queues, each flow on one queue, in order', () => {
      const [a, b] = r.multiQueue.seen as [Array<{ sport: number; seq: number }>, Array<{ sport: number; seq: number }>];
      expect(a.length + b.length).toBe(32 * 8);
      expect(a.length).toBeGreaterThan(0);
      expect(b.length).toBeGreaterThan(0);
      const portsA = new Set(a.map((p) => p.sport));
      const portsB = new Set(b.map((p) => p.sport));
      expect([...portsA].filter((p) => portsB.has(p))).toEqual([]);
      expect(portsA.size + portsB.size).toBe(32);
      for (const q of [a, b]) {
        for (const port of new Set(q.map((p) => p.sport))) {
          expect(q.filter((p) => p.sport === port).map((p) => p.seq), `flow from port ${port}`).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
        }
      }
    });

    it('both fds write', () => {
      const m = r.multiQueue;
      expect(m.written).toEqual([1, 1]);
      expect(m.got).toEqual([
        { port: 4000, payload: 'via-queue-0' },
        { port: 4001, payload: 'via-queue-1' },
      ]);
    });

    it('the device goes away only when both fds are closed', () => {
      expect(r.multiQueue.afterFirstClose).toEqual({ count: 1, numqueues: 1, multiQueue: true });
      expect(r.multiQueue.afterBothClosed).toBeNull();
    });
  });

  describe('the steering filter', () => {
    it('the datagrams exercise every path of the model, and each kind tells a wrong filter apart', () => {
      // A check of the test's own datagrams: every kind takes the path it is meant to...
      for (const d of sent) expect(steer(d.bytes, 2).path, `${d.kind} #${d.id}`).toBe(PATHS[d.kind]);
      expect(new Set(sent.map((d) => d.kind))).toEqual(new Set(Object.keys(PATHS)));
      // ... every queue of every count is predicted for some of them...
      for (const count of COUNTS) {
        const queues = new Set(sent.map((d) => steer(d.bytes, count).queue));
        expect(queues.size, `count ${count}`).toBe(count);
      }
      // ... and each special kind would land elsewhere under some plausible wrong filter.
      const differs = (kind: string, how: Parameters<typeof wrongQueue>[2]): number =>
        sent.filter((d) => d.kind === kind && COUNTS.some((c) => wrongQueue(d.bytes, c, how) !== steer(d.bytes, c).queue)).length;
      for (const kind of ['icmp', 'other-proto', 'frag-first', 'frag-last', 'frag-middle', 'ports-cut', 'ports-cut-ihl6', 'outer-options-frag', 'short']) {
        expect(differs(kind, 'always-ports'), kind).toBeGreaterThan(0);
      }
      for (const kind of ['inner-ihl6', 'inner-ihl15']) expect(differs(kind, 'inner-20'), kind).toBeGreaterThan(0);
      for (const kind of ['outer-options', 'outer-options-frag', 'outer-options-short']) expect(differs(kind, 'outer-20'), kind).toBeGreaterThan(0);
    });

    it('every datagram was sent and reached the unfiltered sockets intact, once', () => {
      const s = r.steering;
      expect(s.errors).toEqual([]);
      expect({ sent: s.sent, failed: s.failed, lastErrno: s.lastErrno }).toEqual({ sent: sent.length, failed: 0, lastErrno: 0 });
      const all = sent.map((d) => d.id);
      for (const label of ['control', 'count1']) {
        const got = s.sockets.find((x) => x.label === label)!.ids;
        expect([...got].sort((x, y) => x - y), label).toEqual(all);
      }
      // Byte for byte what was sent (the outer checksum and length were right already).
      const wrong = sent.filter((d) => s.bytes[String(d.id)] !== d.bytes.toString('hex')).map((d) => `${d.kind} #${d.id}`);
      expect(wrong).toEqual([]);
    });

    it.each(COUNTS)('count %i: each datagram reaches exactly one socket, the one the model predicts', (count) => {
      const group = r.steering.sockets.filter((x) => x.steer?.count === count);
      expect(group.map((x) => x.steer!.index)).toEqual(Array.from({ length: count }, (_, i) => i));
      const where = new Map<number, number[]>();
      for (const sock of group) for (const id of sock.ids) where.set(id, [...(where.get(id) ?? []), sock.steer!.index]);
      const wrong: Array<{ id: number; kind: string; expected: number; got: number[] }> = [];
      for (const d of sent) {
        const expected = steer(d.bytes, count).queue;
        const got = where.get(d.id) ?? [];
        if (got.length !== 1 || got[0] !== expected) wrong.push({ id: d.id, kind: d.kind, expected, got });
      }
      expect(wrong.slice(0, 20), `${wrong.length} of ${sent.length} datagrams misrouted`).toEqual([]);
      // Nothing but the datagrams sent.
      expect([...where.keys()].filter((id) => id < 1 || id > sent.length)).toEqual([]);
      // TCP flows that differ only in an even source port use every queue, none more than twice
      // its share (a hash that took the queue from a low bit put them all on one).
      const even = sent.filter((d) => d.kind === 'even-ports');
      const perQueue = group.map((sock) => even.filter((d) => sock.ids.includes(d.id)).length);
      expect(Math.min(...perQueue), `even-port flows per queue: ${perQueue.join(' ')}`).toBeGreaterThan(0);
      expect(Math.max(...perQueue), `even-port flows per queue: ${perQueue.join(' ')}`).toBeLessThanOrEqual((2 * even.length) / count);
      // The short ones, unhashable, all went to queue 0 (the data path there drops and counts them).
      const shorts = sent.filter((d) => steer(d.bytes, count).path === 'short').map((d) => d.id);
      expect(shorts.length).toBeGreaterThan(0);
      expect(group[0]!.ids.filter((id) => shorts.includes(id)).length).toBe(shorts.length);
    });

    it('steer arguments outside [1, 64] x [0, count) are refused before any socket is made', () => {
      const b = r.steering.badSteer;
      for (const k of ['count0', 'count65', 'indexEqCount', 'negativeIndex', 'fractional']) expect(b[k], k).toMatchObject({ threw: true, name: 'RangeError' });
      for (const k of ['notObject', 'missingCount']) expect(b[k], k).toMatchObject({ threw: true, name: 'TypeError' });
      expect(b.count64).toEqual({ threw: false });
    });
  });
});
