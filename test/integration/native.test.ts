/**
 * The native addon (native/ipipd.cc via src/tun/native.ts) against the real kernel, inside a
 * network namespace this test creates and always deletes. The child fixture
 * (test/fixtures/native-child.ts, run from dist/ after `npm run build`) does the I/O and
 * reports what it saw as JSON; every assertion is here.
 *
 *   root namespace: nothing but `ip netns add/del ntv-<pid>-<random>`
 *
 *   ntv-<pid>-<random>
 *   +------------------------------------------------------------------+
 *   |  dgram 198.51.100.1  <-- 198.51.100.0/24 -->  tnt0 (TUN)          |
 *   |     (step 1: dgram -> TUN -> Reader;  step 2: writeTun -> dgram)  |
 *   |  lo: 192.0.2.1/32  192.0.2.2/32  192.0.2.3/32                     |
 *   |  raw@192.0.2.1 --sendRaw IPIP--> raw@192.0.2.2 (slot 2048, 256)   |
 *   |                                  raw@0.0.0.0 (sees everything)    |
 *   |  tnt1 (TUN deleted under its Reader: poll error)                  |
 *   |  tnt2 (TUN in offload mode: virtio_net_hdr, TUN_F_CSUM|TSO4)      |
 *   |     UDP + TCP SYN -> Reader (NEEDS_CSUM); writeTun with a zero     |
 *   |     header -> dgram 203.0.113.129                                 |
 *   +------------------------------------------------------------------+
 */
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';

import { payloadFor, payloadLen, writeIpv4Udp } from '../fixtures/native-packets.js';
import { expectCleanRun, runFixtureInNetns, type ChildReport, type ChildResult } from '../helpers/child-fixture.js';
import { integrationSkip } from '../helpers/skip.js';

const FIXTURE = fileURLToPath(new URL('../../dist/test/fixtures/native-child.js', import.meta.url));

interface ErrShape { threw?: boolean; name?: string; code?: string; errno?: number; syscall?: string; message?: string }
interface TunPacket {
  slot: number; len: number; headroomPoisoned: boolean; version: number; ihl: number; totalLength: number;
  ttl: number; protocol: number; headerChecksumOk: boolean; src: string; dst: string; sport: number;
  dport: number; udpLength: number; payload: string;
}
interface RawSeen { len: number; outerSrc?: string; outerDst?: string; protocol?: number; totalLength?: number; id?: number; inner?: string }
interface Report extends ChildReport {
  openTun: { name: string; fdIsInt: boolean };
  tunRead: { batches: number[]; packets: TunPacket[]; errors: unknown[] };
  tunRounds: {
    batches: Array<{ n: number; turn: number }>; received: number; afterThrowReceived: number;
    uncaught: string[]; microtaskLate: number; errors: unknown[];
  };
  tunBudget: { batches: Array<{ n: number; turn: number; bytes: number }>; received: number; errors: unknown[] };
  tunTrunc: { seen: Array<{ len: number; nextHeadroomPoisoned: boolean }> };
  tunPacked: { room: number; batches: Array<{ n: number; turn: number; offs: number[]; lens: number[] }>; payloads: string[] };
  tunWrite: { written: number; failed: number; lastErrno: number; got: Array<{ from: string; port: number; payload: string }>; lensAfter: number[] };
  raw: { sent: number; failed: number; lastErrno: number; sentK: number[]; rx: RawSeen[]; small: RawSeen[]; any: RawSeen[]; errors: unknown[]; failedMarked: number[] };
  errors: Record<string, ErrShape> & {
    constants: { IFNAMSIZ: number; IPPROTO_IPIP: number };
    badFdWrite: { returned: number; failed: number; lastErrno: number };
    badFdSend: { returned: number; failed: number; lastErrno: number };
  };
  pollError: { errors: Array<ErrShape & { isError: boolean }>; batches: number[] };
  vnet: {
    seen: Array<Record<string, unknown>>;
    written: number;
    failed: number;
    got: string[];
    errors: Record<string, ErrShape>;
    constants: Record<string, number>;
  };
}

const EINVAL = 22;
/** The fixture's TUN slot and headroom (test/fixtures/native-child.ts). */
const SLOT_SIZE = 2048;
const HEAD_ROOM = 20;

/** The inner IPv4/UDP packet the fixture wrapped in IPIP packet k, as hex. */
function expectedInner(k: number): string {
  const payload = k === 25 ? payloadFor('rawbig', k, 1000) : payloadFor('raw', k, payloadLen(k));
  const b = Buffer.alloc(2048);
  const len = writeIpv4Udp(b, 0, { src: '203.0.113.1', dst: '203.0.113.2', sport: 1000 + k, dport: 2000, id: k, payload });
  return b.toString('hex', 0, len);
}

const outerDstOf = (k: number): string => (k < 20 || k === 25 ? '192.0.2.2' : '192.0.2.3');

const skipReason = integrationSkip('native.test.ts');

describe.skipIf(skipReason)('native addon (in a private network namespace)', () => {
  let child: ChildResult;
  let r: Report;

  beforeAll(async () => {
    ({ child, report: r } = await runFixtureInNetns<Report>(FIXTURE, 'ntv', [], 30_000));
  });

  it('the child ran every step inside the namespace and exited by itself after close()', () => {
    expectCleanRun(child, r);
  });

  it('openTun returns the fd and the kernel name', () => {
    expect(r.openTun).toEqual({ name: 'tnt0', fdIsInt: true });
  });

  it('Reader(TUN) delivers datagrams routed into the TUN, in slots with headroom, batched', () => {
    const { batches, packets, errors } = r.tunRead;
    expect(errors).toEqual([]);
    // 3 singles then a burst of 50: nothing else (IPv6 is off on the TUN).
    expect(packets).toHaveLength(53);
    expect(batches.reduce((a, b) => a + b, 0)).toBe(53);
    expect(batches.slice(0, 3)).toEqual([1, 1, 1]);
    expect(Math.max(...batches)).toBeGreaterThan(1);
    // Packet j of a batch sits in slot j.
    const slots = batches.flatMap((n) => Array.from({ length: n }, (_, i) => i));
    expect(packets.map((p) => p.slot)).toEqual(slots);
    const sport = packets[0].sport;
    packets.forEach((p, j) => {
      const payload = j < 3 ? payloadFor('single', j, payloadLen(j)) : payloadFor('burst', j - 3, payloadLen(j - 3));
      expect(p).toEqual({
        slot: p.slot,
        len: 28 + payload.length,
        headroomPoisoned: true, // the 20 bytes in front of each packet are untouched
        version: 4,
        ihl: 5,
        totalLength: 28 + payload.length,
        ttl: 64,
        protocol: 17,
        headerChecksumOk: true,
        src: '198.51.100.1',
        dst: '198.51.100.2',
        sport,
        dport: 9,
        udpLength: 8 + payload.length,
        payload: payload.toString('hex'),
      });
    });
  });

  it('Reader(TUN) caps a wake-up at 16 batches, runs microtasks between batches, and survives a throwing onBatch', () => {
    const t = r.tunRounds;
    expect(t.errors).toEqual([]);
    expect(t.received).toBe(100);
    expect(t.batches.map((b) => b.n)).toEqual(Array(25).fill(4));
    const perTurn = new Map<number, number>();
    for (const b of t.batches) perTurn.set(b.turn, (perTurn.get(b.turn) ?? 0) + 1);
    // 25 full batches of 4, all queued before the first wake-up: 16 in it, 9 in the next.
    expect([...perTurn.values()]).toEqual([16, 9]);
    expect(t.microtaskLate).toBe(0);
    expect(t.uncaught).toEqual(['thrown from onBatch']);
    expect(t.afterThrowReceived).toBe(10);
  });

  it('Reader(TUN) ends a wake-up once it has read 128 KiB, so that bulk traffic on one fd leaves room for the others', () => {
    const t = r.tunBudget;
    expect(t.errors).toEqual([]);
    expect(t.received).toBe(300);
    const perTurn = new Map<number, Array<{ n: number; bytes: number }>>();
    for (const b of t.batches) perTurn.set(b.turn, [...(perTurn.get(b.turn) ?? []), b]);
    const KIB128 = 128 * 1024;
    for (const batches of perTurn.values()) {
      // No batch is begun once the wake-up has read 128 KiB.
      const beforeLast = batches.slice(0, -1).reduce((sum, b) => sum + b.bytes, 0);
      expect(beforeLast).toBeLessThan(KIB128);
    }
    // 300 packets of 1428 bytes were all queued before the Reader started: full batches of 64
    // (91 392 bytes), so two per wake-up, and the rest in later ones (without the bound, all
    // five in the first).
    expect([...perTurn.values()].map((b) => b.map((x) => x.n))).toEqual([[64, 64], [64, 64], [44]]);
  });

  it('Reader(TUN) reports a packet that does not fit its slot (or fills it exactly) as -1', () => {
    // Slot 256, headroom 20: 236 usable bytes. Packets of 1028, 236, 235 and 78 bytes.
    expect(r.tunTrunc.seen).toEqual([-1, -1, 235, 78].map((len) => ({ len, nextHeadroomPoisoned: true })));
  });

  it('Reader(TUN) in packed mode: packets on 64-byte boundaries, a batch ends when no slot fits, reading goes on', () => {
    const p = r.tunPacked;
    expect(p.payloads).toEqual(Array.from({ length: 40 }, (_, k) => payloadFor('packed', k, payloadLen(k)).toString('hex')));
    for (const b of p.batches) {
      expect(b.offs[0]).toBe(0);
      for (let i = 0; i < b.n; i++) {
        expect(b.offs[i]! + SLOT_SIZE).toBeLessThanOrEqual(p.room); // room for a whole slot
        if (i > 0) expect(b.offs[i]).toBe(b.offs[i - 1]! + ((HEAD_ROOM + b.lens[i - 1]! + 63) & ~63));
      }
      // Ended for want of room: the next packet would have started where no slot fits.
      if (b.n < 64 && b !== p.batches[p.batches.length - 1]) {
        const last = b.n - 1;
        expect(b.offs[last]! + ((HEAD_ROOM + b.lens[last]! + 63) & ~63) + SLOT_SIZE).toBeGreaterThan(p.room);
      }
    }
    // 40 packets queued before the first wake-up, a handful per batch: several batches in it.
    expect(p.batches.length).toBeGreaterThan(3);
    expect(p.batches.filter((b) => b.turn === p.batches[0]!.turn).length).toBeGreaterThan(1);
  });

  it('writeTun writes each packet, skips and counts bad ones', () => {
    const w = r.tunWrite;
    expect(w.written).toBe(2);
    expect(w.failed).toBe(2); // one outside the slab, one the TUN refuses
    expect(w.lastErrno).toBe(EINVAL);
    // The failed packets' lengths are replaced by -errno; the written ones keep theirs.
    expect(w.lensAfter[1]).toBe(-EINVAL);
    expect(w.lensAfter[2]).toBe(-EINVAL);
    expect(w.lensAfter[0]).toBeGreaterThan(0);
    expect(w.lensAfter[3]).toBeGreaterThan(0);
    expect(w.got).toEqual([0, 1].map((k) => ({
      from: '198.51.100.2',
      port: 4000,
      payload: payloadFor('write', k, payloadLen(k)).toString('hex'),
    })));
  });

  it('sendRaw + Reader(raw): IPIP packets arrive intact, only on sockets bound to their destination', () => {
    const w = r.raw;
    expect(w.errors).toEqual([]);
    expect(w.sent).toBe(26);
    expect(w.failed).toBe(1); // the 12-byte runt
    expect(w.lastErrno).toBe(EINVAL);
    expect(w.failedMarked).toEqual([-EINVAL]); // exactly that packet is marked
    expect(w.sentK).toEqual(Array.from({ length: 26 }, (_, k) => k));

    const full = (k: number): RawSeen => {
      const inner = expectedInner(k);
      const len = 20 + inner.length / 2;
      return { len, outerSrc: '192.0.2.1', outerDst: outerDstOf(k), protocol: 4, totalLength: len, id: 1000 + k, inner };
    };
    const toTwo = w.sentK.filter((k) => outerDstOf(k) === '192.0.2.2');
    expect(toTwo).toHaveLength(21);
    // Bound to 192.0.2.2: exactly the packets to .2 (never the five to .3), in order.
    expect(w.rx).toEqual(toTwo.map(full));
    // Bound to INADDR_ANY: everything, which proves the .3 packets were delivered at all.
    expect(w.any).toEqual(w.sentK.map(full));
    expect(w.any.filter((p) => p.outerDst === '192.0.2.3')).toHaveLength(5);
    // 256-byte slots: the 1048-byte packet is reported as truncated (-1), the rest intact.
    expect(w.small).toEqual(toTwo.map((k) => (k === 25 ? { len: -1 } : full(k))));
  });

  it('errors carry the errno name as code, errno and syscall; argument checks throw TypeError/RangeError', () => {
    const e = r.errors;
    expect(e.constants).toEqual({ IFNAMSIZ: 16, IPPROTO_IPIP: 4 });
    expect(e.longName).toMatchObject({ threw: true, name: 'Error', code: 'EINVAL', errno: 22, syscall: 'ioctl' });
    expect(e.longName.message).toContain('x'.repeat(20));
    expect(e.busyName).toMatchObject({ threw: true, code: 'EBUSY', errno: 16, syscall: 'ioctl' });
    expect(e.busyName.message).toContain('tnt0');
    expect(e.closeMinus1).toMatchObject({ threw: true, code: 'EBADF', errno: 9, syscall: 'close' });
    expect(e.close99999).toMatchObject({ threw: true, code: 'EBADF', errno: 9, syscall: 'close' });
    expect(e.bindNotLocal).toMatchObject({ threw: true, code: 'EADDRNOTAVAIL', syscall: 'bind' });
    expect(e.bindNotLocal.message).toContain('198.51.100.77');
    expect(e.packedOneSlot).toMatchObject({ threw: false });
    for (const k of ['batch0', 'batch1025', 'headroomEqSlot', 'slabTooSmall', 'lensTooShort', 'kind4', 'writeTunCountTooBig', 'packedSlabTooSmall', 'packedOffsTooShort']) {
      expect(e[k], k).toMatchObject({ threw: true, name: 'RangeError' });
    }
    for (const k of ['slabNotBuffer', 'lensNotInt32', 'udpNoInfo']) {
      expect(e[k], k).toMatchObject({ threw: true, name: 'TypeError' });
    }
    expect(e.startAfterClose).toMatchObject({ threw: true, code: 'EBADF' });
    // The data path never throws for a per-packet error, not even EBADF.
    expect(e.badFdWrite).toEqual({ returned: 0, failed: 1, lastErrno: 9 });
    expect(e.badFdSend).toEqual({ returned: 0, failed: 1, lastErrno: 9 });
  });

  it('a TUN deleted under a started Reader is reported once through onError', () => {
    expect(r.pollError.batches).toEqual([]);
    expect(r.pollError.errors).toHaveLength(1);
    expect(r.pollError.errors[0]).toMatchObject({ isError: true, code: 'EBADF', errno: 9, syscall: 'uv_poll' });
  });

  it('offload mode: reads start with a virtio_net_hdr, checksums are left to us, writes take a zero header', () => {
    const v = r.vnet;
    expect(v.constants).toEqual({ VNET_HDR_LEN: 10, TUN_F_CSUM: 1, TUN_F_TSO4: 2, TUN_F_TSO6: 4, TUN_F_TSO_ECN: 8, TUN_F_UFO: 16, TUN_F_USO4: 32, TUN_F_USO6: 64 });
    const udp = v.seen.find((p) => p.protocol === 17);
    const syn = v.seen.find((p) => p.protocol === 6);
    // NEEDS_CSUM (1), no GSO; the checksum starts after the IP header, the field at 6 (UDP) / 16 (TCP).
    expect(udp).toMatchObject({ readLen: 10 + 28 + 8, flags: 1, gsoType: 0, csumStart: 20, csumOffset: 6, version: 4, totalLength: 36, src: '203.0.113.129', dst: '203.0.113.200', completed: true, l4ok: true });
    expect(syn).toMatchObject({ flags: 1, gsoType: 0, csumStart: 20, csumOffset: 16, version: 4, tcpFlags: 0x02, src: '203.0.113.129', dst: '203.0.113.200', completed: true, l4ok: true });
    expect(v.written).toBe(1);
    expect(v.failed).toBe(0);
    expect(v.got).toEqual(['vnet-write']);
    expect(v.errors.offloadWithoutVnet).toMatchObject({ threw: true, name: 'RangeError' });
    expect(v.errors.unknownFlag).toMatchObject({ threw: true, name: 'RangeError' });
    expect(v.errors.notObject).toMatchObject({ threw: true, name: 'TypeError' });
    // The UDP_L4 probe the daemon makes (this kernel is 6.2+): USO4 alone is refused, both taken.
    expect(v.errors.usoAlone).toMatchObject({ threw: true, code: 'EINVAL', syscall: 'ioctl' });
    expect(v.errors.usoBoth).toMatchObject({ threw: false });
    expect(v.errors.backToTso).toMatchObject({ threw: false });
    expect(v.errors.offloadUnknownFlag).toMatchObject({ threw: true, name: 'RangeError' });
    expect(v.errors.offloadBadFd).toMatchObject({ threw: true, code: 'EBADF', syscall: 'ioctl' });
  });
});
