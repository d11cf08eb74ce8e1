/**
 * What an ICMP error from a router inside the tunnel means (RFC 2003 §4), and the RFC 1191 §5
 * plateau guess of a path MTU. Packets: test/helpers/icmp-packets.ts.
 *
 *   inner sender 10.0.1.1 --TUN 10.0.1.254-- [ A 192.0.2.1 ] ---- router 203.0.113.254 ---- [ B 198.51.100.2 ]
 *
 * A encapsulated a packet from 10.0.1.1 to B; the router sends A an ICMP error quoting A's outer
 * header (src 192.0.2.1, proto 4), the inner header and 8 bytes of inner data.
 */
import { describe, expect, it } from 'vitest';
import { classifyUnderlayIcmp, IcmpQuote, plateauBelow, UnderlayIcmp } from '../../src/ipip/icmp.js';
import { fixIp, icmp, ipv4, ourOuter, placed, ROUTER, routerError } from '../helpers/icmp-packets.js';
import { A_LOCAL, B_LOCAL } from '../helpers/tunnel-sides.js';

// ---------------------------------------------------------------- classifyUnderlayIcmp

describe('classifyUnderlayIcmp (RFC 2003 §4)', () => {
  it('Frag Needed (3/4) with MTU 1400: fragNeeded; every IcmpQuote field', () => {
    const orig = ourOuter();
    expect(orig.length).toBe(1412);
    const [buf, off, len] = placed(routerError(3, 4, 1400, orig, 20 + 20 + 8));
    const q = new IcmpQuote();
    expect(classifyUnderlayIcmp(buf, off, len, A_LOCAL, q)).toBe(UnderlayIcmp.fragNeeded);
    expect(q.type).toBe(3);
    expect(q.code).toBe(4);
    expect(q.nextHopMtu).toBe(1400);
    expect(q.endpoint).toBe(B_LOCAL);
    expect(q.outerLength).toBe(1412); // from the quoted header, not the cut quote
    // router IP header 20 + ICMP header 8 + our outer header 20
    expect(q.innerOffset).toBe(off + 48);
    expect(q.innerLength).toBe(28); // inner header 20 + 8 data bytes
    expect(buf.subarray(q.innerOffset, q.innerOffset + q.innerLength).equals(orig.subarray(20, 48))).toBe(true);
    expect(q.innerDf).toBe(true);
  });

  it('Frag Needed about an inner packet without DF: innerDf false; a longer quote is all inner', () => {
    const orig = ourOuter(0x0000);
    const [buf, off, len] = placed(routerError(3, 4, 0x0000_0500, orig, 548));
    const q = new IcmpQuote();
    q.innerDf = true; // stale
    expect(classifyUnderlayIcmp(buf, off, len, A_LOCAL, q)).toBe(UnderlayIcmp.fragNeeded);
    expect(q.nextHopMtu).toBe(1280);
    expect(q.innerDf).toBe(false);
    expect(q.innerOffset).toBe(off + 48);
    expect(q.innerLength).toBe(528);
  });

  it('Frag Needed from an old router (MTU 0): nextHopMtu 0, outerLength for the plateau guess', () => {
    const [buf, off, len] = placed(routerError(3, 4, 0, ourOuter(), 48));
    const q = new IcmpQuote();
    expect(classifyUnderlayIcmp(buf, off, len, A_LOCAL, q)).toBe(UnderlayIcmp.fragNeeded);
    expect(q.nextHopMtu).toBe(0);
    expect(plateauBelow(q.outerLength)).toBe(1006);
  });

  it('a quote of only the outer header + 8 bytes: classified, but innerLength 0 (nothing to relay)', () => {
    const [buf, off, len] = placed(routerError(3, 4, 1400, ourOuter(), 28));
    const q = new IcmpQuote();
    q.innerLength = 99;
    q.innerDf = true;
    expect(classifyUnderlayIcmp(buf, off, len, A_LOCAL, q)).toBe(UnderlayIcmp.fragNeeded);
    expect(q.endpoint).toBe(B_LOCAL);
    expect(q.nextHopMtu).toBe(1400);
    expect(q.innerLength).toBe(0);
    expect(q.innerDf).toBe(false);
  });

  it('a quote with 19 bytes of inner header: innerLength 0', () => {
    const [buf, off, len] = placed(routerError(3, 1, 0, ourOuter(), 39));
    const q = new IcmpQuote();
    expect(classifyUnderlayIcmp(buf, off, len, A_LOCAL, q)).toBe(UnderlayIcmp.relayUnreachable);
    expect(q.innerLength).toBe(0);
  });

  it.each([
    ['3/0 net unreachable', 3, 0, UnderlayIcmp.relayUnreachable],
    ['3/1 host unreachable', 3, 1, UnderlayIcmp.relayUnreachable],
    ['3/2 protocol unreachable', 3, 2, UnderlayIcmp.relayUnreachable],
    ['3/13 administratively prohibited', 3, 13, UnderlayIcmp.relayUnreachable],
    ['11/0 TTL exceeded in transit', 11, 0, UnderlayIcmp.relayUnreachable],
    ['11/1 reassembly time exceeded', 11, 1, UnderlayIcmp.relayUnreachable],
    ['3/3 port unreachable', 3, 3, UnderlayIcmp.noRelay],
    ['3/5 source route failed', 3, 5, UnderlayIcmp.noRelay],
    ['5/0 redirect (net)', 5, 0, UnderlayIcmp.noRelay],
    ['5/1 redirect (host)', 5, 1, UnderlayIcmp.noRelay],
    ['4/0 source quench', 4, 0, UnderlayIcmp.noRelay],
    ['12/0 parameter problem', 12, 0, UnderlayIcmp.noRelay],
  ])('%s -> class %i, quote located', (_n, type, code, cls) => {
    const [buf, off, len] = placed(routerError(type, code, 0, ourOuter(), 48));
    const q = new IcmpQuote();
    expect(classifyUnderlayIcmp(buf, off, len, A_LOCAL, q)).toBe(cls);
    expect([q.type, q.code, q.endpoint]).toEqual([type, code, B_LOCAL]);
    expect([q.innerOffset - off, q.innerLength, q.innerDf]).toEqual([48, 28, true]);
  });

  it('ignores bytes after the ICMP datagram (link padding) and uses its Total Length', () => {
    const e = routerError(3, 4, 1400, ourOuter(), 48);
    const padded = Buffer.concat([e, Buffer.alloc(10, 0)]);
    const q = new IcmpQuote();
    expect(classifyUnderlayIcmp(padded, 0, padded.length, A_LOCAL, q)).toBe(UnderlayIcmp.fragNeeded);
    expect(q.innerLength).toBe(28);
  });

  describe('notOurs', () => {
    const good = () => routerError(3, 4, 1400, ourOuter(), 48);
    const cases: [string, () => Buffer, number?][] = [
      ['echo reply quoting the same bytes', () => ipv4(icmp(0, 0, 0, ourOuter().subarray(0, 48)), { src: ROUTER, dst: A_LOCAL, protocol: 1 })],
      ['echo request', () => ipv4(icmp(8, 0, 0, ourOuter().subarray(0, 48)), { src: ROUTER, dst: A_LOCAL, protocol: 1 })],
      ['quoted protocol 17', () => routerError(3, 4, 1400, ourOuter(0x4000, 1372, { protocol: 17 }), 48)],
      ['quoted protocol 41', () => routerError(3, 4, 1400, ourOuter(0x4000, 1372, { protocol: 41 }), 48)],
      ['quoted source not local (B -> A traffic)', () => routerError(3, 4, 1400, ourOuter(0x4000, 1372, { src: B_LOCAL, dst: A_LOCAL }), 48)],
      ['quoted source another local-looking host', () => routerError(3, 4, 1400, ourOuter(0x4000, 1372, { src: '192.0.2.2' }), 48)],
      ['quoted header version 6', () => {
        const orig = Buffer.from(ourOuter());
        orig[0] = 0x65;
        return routerError(3, 4, 1400, orig, 48);
      }],
      ['quoted header IHL 4', () => {
        const orig = Buffer.from(ourOuter());
        orig[0] = 0x44;
        return routerError(3, 4, 1400, orig, 48);
      }],
      ['bad ICMP checksum', () => {
        const e = good();
        e[22] ^= 0x01;
        return e;
      }],
      ['ICMP body changed after the checksum', () => {
        const e = good();
        e[60] ^= 0x80;
        return e;
      }],
      ['bad outer IP checksum', () => {
        const e = good();
        e[10] ^= 0x01;
        return e;
      }],
      ['outer TTL changed without checksum update', () => {
        const e = good();
        e[8]--;
        return e;
      }],
      ['outer protocol 17 (not ICMP)', () => {
        const e = good();
        e[9] = 17;
        return fixIp(e);
      }],
      ['too short: ICMP header + 19 bytes of quote', () => routerError(3, 4, 1400, ourOuter(), 19)],
      ['too short: ICMP header only', () => routerError(3, 4, 1400, ourOuter(), 0)],
      ['too short: 19 bytes', () => good().subarray(0, 19)],
      ['received fewer bytes than the Total Length', () => good(), -1],
      ['outer version 6', () => {
        const e = good();
        e[0] = 0x65;
        return fixIp(e);
      }],
    ];
    it.each(cases)('%s', (_n, make, lenDelta = 0) => {
      const [buf, off, len] = placed(make());
      const q = new IcmpQuote();
      q.innerLength = 77;
      q.innerDf = true;
      expect(classifyUnderlayIcmp(buf, off, len + lenDelta, A_LOCAL, q)).toBe(UnderlayIcmp.notOurs);
      expect(q.innerLength).toBe(0);
      expect(q.innerDf).toBe(false);
    });

    it('the same error is ours only for the right local address', () => {
      const [buf, off, len] = placed(good());
      const q = new IcmpQuote();
      expect(classifyUnderlayIcmp(buf, off, len, A_LOCAL, q)).toBe(UnderlayIcmp.fragNeeded);
      expect(classifyUnderlayIcmp(buf, off, len, B_LOCAL, q)).toBe(UnderlayIcmp.notOurs);
    });

    it('an impossible length from the I/O layer is not ours (no throw)', () => {
      const [buf, off, len] = placed(good());
      const q = new IcmpQuote();
      expect(classifyUnderlayIcmp(buf, off, -1, A_LOCAL, q)).toBe(UnderlayIcmp.notOurs);
      expect(classifyUnderlayIcmp(buf, off, buf.length, A_LOCAL, q)).toBe(UnderlayIcmp.notOurs); // past the end
      expect(classifyUnderlayIcmp(buf, off, len, A_LOCAL, q)).toBe(UnderlayIcmp.fragNeeded);
    });
  });
});

// ---------------------------------------------------------------- plateauBelow

describe('plateauBelow (RFC 1191 §5, plateau table of §7)', () => {
  it.each([
    [65535, 32000],
    [32001, 32000],
    [32000, 17914],
    [17915, 17914],
    [17914, 8166],
    [8166, 4352],
    [4352, 2002],
    [2002, 1492],
    [1500, 1492],
    [1493, 1492],
    [1492, 1006],
    [1412, 1006],
    [1006, 508],
    [576, 508],
    [508, 296],
    [296, 68],
    [69, 68],
    [68, 68], // never below the IPv4 minimum MTU
    [20, 68],
    [0, 68],
  ])('%i -> %i', (length, plateau) => {
    expect(plateauBelow(length)).toBe(plateau);
  });

  it('is strictly below the length whenever the length is above 68, and never below 68', () => {
    for (let l = 0; l <= 65535; l++) {
      const p = plateauBelow(l);
      if (p < 68 || (l > 68 && p >= l)) throw new Error(`plateauBelow(${l}) = ${p}`);
    }
  });
});
