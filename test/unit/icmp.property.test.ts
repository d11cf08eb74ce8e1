/**
 * Properties of ICMP (src/ipip/icmp.ts) over hostile input. `classifyUnderlayIcmp` on random
 * bytes or a router's error about our outer packet mutated field by field: one value of the
 * closed `UnderlayIcmp` enum, nothing written, nothing read outside the datagram, and the quoted
 * inner packet it points at inside it. `writeIcmpError` about any datagram: the error fits its
 * 576 bytes, is written nowhere else, reads only the quoted datagram, and is a valid IPv4/ICMP
 * datagram (both checksums verify). `mayAnswerWithIcmpError` on any datagram: a boolean, read
 * from the datagram only. Guards and layouts: test/helpers/guarded.ts.
 */
import { Buffer } from 'node:buffer';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  checkIPv4,
  classifyUnderlayIcmp,
  computeHeaderChecksum,
  ICMP_ERROR_MAX,
  IcmpQuote,
  internetChecksum,
  IPV4_OK,
  mayAnswerWithIcmpError,
  UnderlayIcmp,
  writeIcmpError,
} from '../../src/ipip/index.js';
import { addrNear, mutate, mutations, params } from '../helpers/arbitraries.js';
import { expectGuards, inSlot, lay } from '../helpers/guarded.js';
import { ourOuter, routerError } from '../helpers/icmp-packets.js';
import { A_LOCAL } from '../helpers/tunnel-sides.js';

const UNDERLAY_ICMP_VALUES: readonly number[] = Object.values(UnderlayIcmp);

/** A router's error about our outer packet: any type, code, MTU word and quote length. */
const routerErrorPacket = fc
  .record({ type: fc.constantFrom(3, 4, 5, 11, 12, 0, 8), code: fc.nat(15), rest: fc.nat(0xffff), innerFlags: fc.constantFrom(0, 0x4000), quote: fc.integer({ min: 0, max: 600 }) })
  .map((s) => routerError(s.type, s.code, s.rest, ourOuter(s.innerFlags, 600), s.quote));

/** Random bytes, or a router error mutated; the IP and ICMP checksums fixed again sometimes. */
const fromUnderlay = fc.oneof(
  fc.uint8Array({ maxLength: 120 }).map((u) => Buffer.from(u)),
  fc.tuple(routerErrorPacket, mutations, fc.boolean()).map(([p, m, fixIcmp]) => {
    const b = mutate(p, m.muts, m.cut, m.tail, m.fix ? 0 : null);
    if (fixIcmp && b.length >= 28 && (b[0] & 0x0f) === 5) {
      b.writeUInt16BE(0, 22);
      b.writeUInt16BE(internetChecksum(b, 20, b.length - 20), 22);
    }
    return b;
  }),
);

describe('classifyUnderlayIcmp on any bytes', () => {
  it('one value of the enum, nothing written, nothing read outside, the quote inside the datagram', () => {
    fc.assert(
      fc.property(fromUnderlay, (pkt) => {
        const { result, after } = inSlot(
          pkt,
          (l) => {
            const q = new IcmpQuote();
            return { c: classifyUnderlayIcmp(l.buf, l.start, pkt.length, A_LOCAL, q), q, start: l.start };
          },
          (r) => [r.c, r.q.type, r.q.code, r.q.nextHopMtu, r.q.endpoint, r.q.outerLength, r.q.innerOffset - r.start, r.q.innerLength, r.q.innerDf],
          'classifyUnderlayIcmp',
        );
        expect(UNDERLAY_ICMP_VALUES).toContain(result.c);
        expect(after.equals(pkt)).toBe(true);
        if (result.c !== UnderlayIcmp.notOurs && result.q.innerLength > 0) {
          expect(result.q.innerOffset).toBeGreaterThanOrEqual(result.start);
          expect(result.q.innerOffset + result.q.innerLength).toBeLessThanOrEqual(result.start + pkt.length);
        }
      }),
      params(),
    );
  });
});

/** A valid IPv4 header of any fields over any bytes: what the data path asks about. */
const datagram = fc
  .record({ body: fc.uint8Array({ maxLength: 700 }), frag: fc.nat(0xffff), protocol: fc.constantFrom(1, 4, 6, 17, 0, 255), src: addrNear(0, 0x7f000001, -1, 0x0a000101), dst: addrNear(-0x20000000, -1, 0x0a000201) })
  .map((s) => {
    const b = Buffer.alloc(20 + s.body.length);
    b[0] = 0x45;
    b.writeUInt16BE(b.length, 2);
    b.writeUInt16BE(s.frag, 6);
    b[8] = 64;
    b[9] = s.protocol;
    b.writeInt32BE(s.src, 12);
    b.writeInt32BE(s.dst, 16);
    b.set(s.body, 20);
    b.writeUInt16BE(computeHeaderChecksum(b, 0), 10);
    return b;
  });

describe('ICMP errors about any datagram', () => {
  it('mayAnswerWithIcmpError reads only the datagram and answers a boolean', () => {
    fc.assert(
      fc.property(datagram, (d) => {
        const { result, after } = inSlot(d, (l) => mayAnswerWithIcmpError(l.buf, l.start, d.length), undefined, 'mayAnswerWithIcmpError');
        expect(typeof result).toBe('boolean');
        expect(after.equals(d)).toBe(true);
      }),
      params(),
    );
  });

  it('writeIcmpError writes a valid error of at most 576 bytes into its slot only, reading only the quoted bytes', () => {
    fc.assert(
      fc.property(datagram, fc.nat(255), fc.nat(255), fc.integer(), fc.integer(), fc.integer(), fc.nat(0xffff), (d, type, code, rest, src, dst, id) => {
        const { result } = inSlot(
          d,
          (l) => {
            const out = lay(new Uint8Array(ICMP_ERROR_MAX), 0xa5, 0xa5);
            const n = writeIcmpError(out.buf, out.start, type, code, rest, src, dst, id, l.buf, l.start, d.length);
            expectGuards(out, ICMP_ERROR_MAX, 0xa5, 0xa5, 'writeIcmpError output');
            return out.buf.subarray(out.start, out.start + n);
          },
          (e) => e.toString('hex'),
          'writeIcmpError',
        );
        expect(result.length).toBeLessThanOrEqual(ICMP_ERROR_MAX);
        expect(result.length).toBe(28 + Math.min(d.length, ICMP_ERROR_MAX - 28));
        expect(checkIPv4(result, 0, result.length, true)).toBe(IPV4_OK);
        expect(internetChecksum(result, 20, result.length - 20)).toBe(0);
        expect(result.subarray(28).equals(d.subarray(0, result.length - 28))).toBe(true);
      }),
      params(),
    );
  });
});
