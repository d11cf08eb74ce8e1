/**
 * Integer fields in packet bytes, for the header views (ipv4.ts, tcp.ts, udp.ts, vnet.ts):
 * `be16`/`putBe16` and `be32`/`putBe32` in network byte order (RFC 791 Appendix B), `le16`/
 * `putLe16` in little-endian (the virtio_net_hdr on the hosts ipipd runs on).
 *
 * Bytes are read one by one rather than with `buf.readUInt16BE` and friends, which go through
 * Node's bounds checks; these are small enough for TurboFan to inline into the data path.
 * A 32-bit read gives the signed int32 (V8 keeps it a small integer; `>>> 0` above 2^31 would
 * make a heap number). Unchecked: the bytes must be inside `buf`. Pure: no allocation.
 */
import type { Buffer } from 'node:buffer';

/** The big-endian 16-bit value at `buf[o]`. */
export function be16(buf: Buffer, o: number): number {
  return (buf[o] << 8) | buf[o + 1];
}

/** Write `v` (its low 16 bits) big-endian at `buf[o]`. */
export function putBe16(buf: Buffer, o: number, v: number): void {
  buf[o] = (v >> 8) & 0xff;
  buf[o + 1] = v & 0xff;
}

/** The big-endian 32-bit value at `buf[o]`, as a signed int32. */
export function be32(buf: Buffer, o: number): number {
  return (buf[o] << 24) | (buf[o + 1] << 16) | (buf[o + 2] << 8) | buf[o + 3];
}

/** Write `v` (an int32 or uint32) big-endian at `buf[o]`. */
export function putBe32(buf: Buffer, o: number, v: number): void {
  buf[o] = (v >> 24) & 0xff;
  buf[o + 1] = (v >> 16) & 0xff;
  buf[o + 2] = (v >> 8) & 0xff;
  buf[o + 3] = v & 0xff;
}

/** The little-endian 16-bit value at `buf[o]`. */
export function le16(buf: Buffer, o: number): number {
  return buf[o] | (buf[o + 1] << 8);
}

/** Write `v` (its low 16 bits) little-endian at `buf[o]`. */
export function putLe16(buf: Buffer, o: number, v: number): void {
  buf[o] = v & 0xff;
  buf[o + 1] = (v >> 8) & 0xff;
}
