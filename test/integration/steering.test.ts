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
 * 2. The steering filter (built by src/tun/steering.ts, attached by openRaw): several thousand
 *    hand-made IPIP datagrams (test/helpers/steer-datagrams.ts: many TCP and UDP flows, ICMP
 *    and other inner protocols, inner fragments, inner IP options, truncated inner headers, TCP
 *    whose port bytes are cut off, outer IP options) reach the control socket intact, and each
 *    one reaches exactly one socket of each steered group: the one the model predicts. openRaw
 *    refuses a filter that is not whole `struct sock_filter` entries, and passes on the
 *    kernel's refusal of a bad program.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';

import { expectCleanRun, runFixtureInNetns, type ChildReport, type ChildResult } from '../helpers/child-fixture.js';
import { integrationSkip } from '../helpers/skip.js';
import { PATHS, datagrams, wrongQueue } from '../helpers/steer-datagrams.js';
import { steer } from '../helpers/steering-model.js';

const FIXTURE = fileURLToPath(new URL('../../dist/test/fixtures/steer-child.js', import.meta.url));

const COUNTS = [2, 3, 5, 8];

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
    badFilter: Record<string, ErrShape>;
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

    it('openRaw takes 1 to 4096 whole struct sock_filter entries as bytes, and reports a program the kernel refuses', () => {
      const f = r.steering.badFilter;
      expect(f.notBytes, 'notBytes').toMatchObject({ threw: true, name: 'TypeError' });
      for (const k of ['empty', 'partialEntry', 'tooLong']) expect(f[k], k).toMatchObject({ threw: true, name: 'RangeError' });
      expect(f.noReturn).toMatchObject({ threw: true, code: 'EINVAL', errno: 22, syscall: 'setsockopt' });
      expect(f.noReturn!.message).toContain('SO_ATTACH_FILTER');
    });
  });
});
