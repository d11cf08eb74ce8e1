/**
 * Packets for the ICMP tests (icmp*.test.ts), built independently of src/ipip: IPv4 datagrams
 * (`ipv4`), ICMP messages (`icmp`), our outer packet as A sent it (`ourOuter`) and a router's
 * error about it (`routerError`), every checksum by `refChecksum`. The topology:
 *
 *   inner sender 10.0.1.1 --TUN 10.0.1.254-- [ A 192.0.2.1 ] ---- router 203.0.113.254 ---- [ B 198.51.100.2 ]
 */
import { ip, refChecksum } from './packets.js';
import { A_LOCAL, B_LOCAL } from './tunnel-sides.js';

/** Writes the header checksum of the IPv4 header at `off` (field zeroed first). */
export function fixIp(b: Buffer, off = 0): Buffer {
  b.writeUInt16BE(0, off + 10);
  b.writeUInt16BE(refChecksum(b, off, (b[off] & 0x0f) * 4), off + 10);
  return b;
}

export interface IpSpec {
  src?: string | number;
  dst?: string | number;
  protocol?: number;
  flags?: number;
  tos?: number;
  ttl?: number;
  id?: number;
}

/** An IPv4 datagram (IHL 5) carrying `payload`, valid header checksum. */
export function ipv4(payload: Buffer, spec: IpSpec = {}): Buffer {
  const addr = (a: string | number | undefined, d: string) => (typeof a === 'number' ? a : ip(a ?? d));
  const b = Buffer.alloc(20 + payload.length);
  b[0] = 0x45;
  b[1] = spec.tos ?? 0;
  b.writeUInt16BE(b.length, 2);
  b.writeUInt16BE(spec.id ?? 0x1234, 4);
  b.writeUInt16BE(spec.flags ?? 0x4000, 6);
  b[8] = spec.ttl ?? 64;
  b[9] = spec.protocol ?? 17;
  b.writeInt32BE(addr(spec.src, '10.0.1.1'), 12);
  b.writeInt32BE(addr(spec.dst, '10.0.2.1'), 16);
  payload.copy(b, 20);
  return fixIp(b);
}

/** An ICMP message: type, code, 4-byte rest word, body; valid ICMP checksum. */
export function icmp(type: number, code: number, rest: number, body: Buffer): Buffer {
  const m = Buffer.alloc(8 + body.length);
  m[0] = type;
  m[1] = code;
  m.writeUInt32BE(rest >>> 0, 4);
  body.copy(m, 8);
  m.writeUInt16BE(refChecksum(m, 0, m.length), 2);
  return m;
}

export function pattern(n: number, seed = 1): Buffer {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 17 + 5) & 0xff;
  return b;
}

export const TUN_ADDR = ip('10.0.1.254');
export const SENDER = ip('10.0.1.1');
export const ROUTER = ip('203.0.113.254');

/** Our outer packet as A sent it: 192.0.2.1 -> B, proto 4, around an inner UDP datagram. */
export function ourOuter(innerFlags = 0x4000, innerPayload = 1372, outerSpec: IpSpec = {}): Buffer {
  const inner = ipv4(pattern(innerPayload, 2), { src: '10.0.1.1', dst: '10.0.2.1', flags: innerFlags, ttl: 63, id: 0x4242 });
  return ipv4(inner, { src: A_LOCAL, dst: B_LOCAL, protocol: 4, flags: 0x4000, id: 0x0007, ...outerSpec });
}

/**
 * The router's error about `orig`, quoting its first `quoteLen` bytes (RFC 792: header + 8
 * bytes at least; RFC 1812 routers quote more), from 203.0.113.254 to A.
 */
export function routerError(type: number, code: number, rest: number, orig: Buffer, quoteLen: number): Buffer {
  return ipv4(icmp(type, code, rest, orig.subarray(0, quoteLen)), { src: ROUTER, dst: A_LOCAL, protocol: 1, ttl: 250, flags: 0 });
}

/** Places `d` at offset 17 of a poisoned buffer with 6 bytes after it; returns [buf, off, len]. */
export function placed(d: Buffer): [Buffer, number, number] {
  return [Buffer.concat([Buffer.alloc(17, 0xa5), d, Buffer.alloc(6, 0xa5)]), 17, d.length];
}
