/**
 * Hand-made IPIP datagrams for the steering tests: outer IPv4 protocol 4, 192.0.2.1 -> 192.0.2.2,
 * the outer ID names the datagram, checksums by the book (so the kernel takes them as they
 * are). Many TCP and UDP flows, ICMP and other inner protocols, inner fragments, inner IP
 * options, truncated inner headers, TCP whose port bytes are cut off, outer IP options: every
 * path of the reference model (test/helpers/steering-model.ts), with `PATHS` saying which kind
 * takes which and `wrongQueue` the plausible wrong filters each kind tells apart.
 *
 * Used by test/integration/steering.test.ts (the program in the kernel) and
 * test/unit/steering.test.ts (the program in a cBPF interpreter).
 */
import { refChecksum, rng } from './packets.js';
import { flowHash, queueOf, steer, type SteerPath } from './steering-model.js';


export interface Crafted {
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
export function datagrams(): Crafted[] {
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
export const PATHS: Record<string, SteerPath> = {
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
export function wrongQueue(d: Buffer, count: number, how: 'always-ports' | 'inner-20' | 'outer-20'): number {
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
