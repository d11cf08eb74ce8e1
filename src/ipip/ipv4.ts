/**
 * The IPv4 header (RFC 791 §3.1) as a view over bytes: named offsets, one validation, and
 * unchecked accessors (STYLE rules 4 and 5, after gVisor header/ipv4.go and smoltcp
 * wire/ipv4.rs).
 *
 *     0                   1                   2                   3
 *     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |Version|  IHL  |Type of Service|          Total Length         |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |         Identification        |Flags|      Fragment Offset    |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |  Time to Live |    Protocol   |         Header Checksum       |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |                       Source Address                          |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |                    Destination Address                        |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |                    Options                    |    Padding    |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *
 * Flow, in the order the functions appear: the offsets and field constants; the problem codes of
 * `checkIPv4`, then `checkIPv4`, the one validation; the getters (with the flag tests
 * `isIPv4NoOptions`, `isDontFragment`, `isMoreFragments`, `isFragment`) and setters, field by
 * field in header order; `computeHeaderChecksum` last.
 *
 * Every header function takes `(buf, off)` where `off` is the first byte of the header. The
 * accessors are **unchecked**: they are only meaningful after `checkIPv4` accepted the header
 * (for setters: when the caller knows the 20..60 bytes exist). Out-of-range bytes read as 0
 * rather than throwing; that is exactly why the check must come first.
 *
 * Addresses are the **signed** 32-bit integers `buf.readInt32BE(off)` would return (the
 * representation shared with src/routing): V8 keeps int32 as small integers, whereas `>>> 0`
 * above 2^31 makes heap numbers. The accessors read bytes directly instead of calling
 * `readInt32BE`, avoiding Node's bounds-check path; the value is the same.
 *
 * Pure: no I/O, no allocation, no throws.
 */
import type { Buffer } from 'node:buffer';
import { onesSum } from './checksum.js';

// Offsets of the fields from the start of the header (RFC 791 §3.1).
export const OFF_VERSION_IHL = 0;
export const OFF_TOS = 1;
export const OFF_TOTAL_LENGTH = 2;
export const OFF_ID = 4;
export const OFF_FLAGS_FRAG = 6;
export const OFF_TTL = 8;
export const OFF_PROTOCOL = 9;
export const OFF_CHECKSUM = 10;
export const OFF_SRC = 12;
export const OFF_DST = 16;

/** Header length in bytes without options (IHL 5). */
export const IPV4_MIN_HEADER = 20;
/** Header length in bytes with the most options (IHL 15). */
export const IPV4_MAX_HEADER = 60;
/** Largest value of Total Length (16 bits). */
export const IPV4_MAX_TOTAL_LENGTH = 0xffff;
/** First byte of a header with version 4 and no options. */
export const IPV4_VERSION_IHL_NO_OPTIONS = 0x45;
/** Protocol number of IP-in-IP (RFC 2003 §3; IANA "IPv4 encapsulation"). */
export const IPPROTO_IPIP = 4;

// Masks over the 16-bit Flags + Fragment Offset word (RFC 791 §3.1 "Flags").
/** Bit 0 of Flags: reserved, must be zero. */
export const FLAG_RESERVED = 0x8000;
/** Bit 1 of Flags: Don't Fragment. */
export const FLAG_DF = 0x4000;
/** Bit 2 of Flags: More Fragments. */
export const FLAG_MF = 0x2000;
/** Fragment Offset, in units of 8 bytes. */
export const FRAG_OFFSET_MASK = 0x1fff;

// Problem codes of checkIPv4, in the order it checks.
/** The header is valid. */
export const IPV4_OK = 0;
/** Fewer than 20 bytes received: not even a minimal header. */
export const IPV4_ERR_SHORT = 1;
/** Version field is not 4. */
export const IPV4_ERR_VERSION = 2;
/** IHL < 5 (RFC 791: "the minimum value for a correct header is 5"). */
export const IPV4_ERR_IHL = 3;
/** Total Length is smaller than the header length (IHL * 4). */
export const IPV4_ERR_HEADER_LENGTH = 4;
/** Total Length is larger than the bytes received. */
export const IPV4_ERR_TOTAL_LENGTH = 5;
/** The header checksum does not verify (RFC 1071). */
export const IPV4_ERR_CHECKSUM = 6;

/**
 * The one validation of an IPv4 header at `buf[off]` of which `received` bytes are present
 * (and are inside `buf`: the caller's slot bookkeeping guarantees that). Checks, in order:
 * received >= 20, version 4, IHL >= 5, IHL * 4 <= Total Length, Total Length <= received,
 * and, if `verifyChecksum` (default true), the header checksum. Returns `IPV4_OK` (0) or the
 * first failing `IPV4_ERR_*` code. Options are not parsed.
 *
 * After `IPV4_OK`, every accessor below is safe for this header, and the datagram occupies
 * `buf[off, off + getTotalLength(buf, off))`.
 */
export function checkIPv4(buf: Buffer, off: number, received: number, verifyChecksum = true): number {
  if (received < IPV4_MIN_HEADER) return IPV4_ERR_SHORT;
  const vihl = buf[off];
  if (vihl >> 4 !== 4) return IPV4_ERR_VERSION;
  const ihl = vihl & 0x0f;
  if (ihl < 5) return IPV4_ERR_IHL;
  const total = (buf[off + OFF_TOTAL_LENGTH] << 8) | buf[off + OFF_TOTAL_LENGTH + 1];
  if (ihl << 2 > total) return IPV4_ERR_HEADER_LENGTH;
  if (total > received) return IPV4_ERR_TOTAL_LENGTH;
  // A correct header sums to 0xffff (RFC 1071 §1 (3)); onesSum never returns -0 (0) here
  // because the version nibble makes the sum non-zero.
  if (verifyChecksum && onesSum(buf, off, ihl << 2, 0) !== 0xffff) return IPV4_ERR_CHECKSUM;
  return IPV4_OK;
}

// ---- Getters (unchecked: valid only after checkIPv4 returned IPV4_OK) ----

/** Version (4 bits): 4 for IPv4. Also usable before the check if buf[off] exists. */
export function getVersion(buf: Buffer, off: number): number {
  return buf[off + OFF_VERSION_IHL] >> 4;
}

/** IHL (4 bits): header length in 32-bit words, 5..15. */
export function getIhl(buf: Buffer, off: number): number {
  return buf[off + OFF_VERSION_IHL] & 0x0f;
}

/** Header length in bytes (IHL * 4): 20..60. */
export function getHeaderLength(buf: Buffer, off: number): number {
  return (buf[off + OFF_VERSION_IHL] & 0x0f) << 2;
}

/** Version 4 and IHL 5 (the first byte is 0x45): an IPv4 header without options. */
export function isIPv4NoOptions(buf: Buffer, off: number): boolean {
  return buf[off + OFF_VERSION_IHL] === IPV4_VERSION_IHL_NO_OPTIONS;
}

/** Type of Service (8 bits; RFC 2474 DSCP in the high 6 bits, RFC 3168 ECN in the low 2). */
export function getTos(buf: Buffer, off: number): number {
  return buf[off + OFF_TOS];
}

/** Total Length (16 bits): length of the datagram, header plus data, in bytes. */
export function getTotalLength(buf: Buffer, off: number): number {
  return (buf[off + OFF_TOTAL_LENGTH] << 8) | buf[off + OFF_TOTAL_LENGTH + 1];
}

/** Identification (16 bits): fragment reassembly key (RFC 791, RFC 6864). */
export function getId(buf: Buffer, off: number): number {
  return (buf[off + OFF_ID] << 8) | buf[off + OFF_ID + 1];
}

/** Flags (3 bits) and Fragment Offset (13 bits) as one 16-bit word; see the FLAG_* masks. */
export function getFlagsFragment(buf: Buffer, off: number): number {
  return (buf[off + OFF_FLAGS_FRAG] << 8) | buf[off + OFF_FLAGS_FRAG + 1];
}

/** Flags bit 1, Don't Fragment. */
export function isDontFragment(buf: Buffer, off: number): boolean {
  return (buf[off + OFF_FLAGS_FRAG] & (FLAG_DF >> 8)) !== 0;
}

/** Flags bit 2, More Fragments. */
export function isMoreFragments(buf: Buffer, off: number): boolean {
  return (buf[off + OFF_FLAGS_FRAG] & (FLAG_MF >> 8)) !== 0;
}

/** Fragment Offset (13 bits), in units of 8 bytes. */
export function getFragmentOffset(buf: Buffer, off: number): number {
  return getFlagsFragment(buf, off) & FRAG_OFFSET_MASK;
}

/**
 * A fragment (RFC 791 §3.2): More Fragments set or a Fragment Offset other than 0, i.e. not a
 * whole datagram (its first fragment included, whose offset is 0).
 */
export function isFragment(buf: Buffer, off: number): boolean {
  return (getFlagsFragment(buf, off) & (FLAG_MF | FRAG_OFFSET_MASK)) !== 0;
}

/** Time to Live (8 bits), in hops (nominally seconds; every router decrements it by 1). */
export function getTtl(buf: Buffer, off: number): number {
  return buf[off + OFF_TTL];
}

/** Protocol (8 bits): the next-level protocol number (4 = IP-in-IP, 1 = ICMP, 6 = TCP). */
export function getProtocol(buf: Buffer, off: number): number {
  return buf[off + OFF_PROTOCOL];
}

/** Header Checksum (16 bits): Internet checksum over the header only (RFC 1071). */
export function getChecksum(buf: Buffer, off: number): number {
  return (buf[off + OFF_CHECKSUM] << 8) | buf[off + OFF_CHECKSUM + 1];
}

/** Source Address (32 bits), as a signed int32 (same value as `readInt32BE`). */
export function getSrc(buf: Buffer, off: number): number {
  const o = off + OFF_SRC;
  return (buf[o] << 24) | (buf[o + 1] << 16) | (buf[o + 2] << 8) | buf[o + 3];
}

/** Destination Address (32 bits), as a signed int32 (same value as `readInt32BE`). */
export function getDst(buf: Buffer, off: number): number {
  const o = off + OFF_DST;
  return (buf[o] << 24) | (buf[o + 1] << 16) | (buf[o + 2] << 8) | buf[o + 3];
}

// ---- Setters (unchecked: the header's bytes must exist; values are truncated to the field) ----

/** Version (4 bits) and IHL (4 bits, 32-bit words) together. */
export function setVersionIhl(buf: Buffer, off: number, version: number, ihl: number): void {
  buf[off + OFF_VERSION_IHL] = ((version & 0x0f) << 4) | (ihl & 0x0f);
}

/** Type of Service (8 bits). */
export function setTos(buf: Buffer, off: number, tos: number): void {
  buf[off + OFF_TOS] = tos & 0xff;
}

/** Total Length (16 bits), in bytes. */
export function setTotalLength(buf: Buffer, off: number, length: number): void {
  buf[off + OFF_TOTAL_LENGTH] = (length >> 8) & 0xff;
  buf[off + OFF_TOTAL_LENGTH + 1] = length & 0xff;
}

/** Identification (16 bits). */
export function setId(buf: Buffer, off: number, id: number): void {
  buf[off + OFF_ID] = (id >> 8) & 0xff;
  buf[off + OFF_ID + 1] = id & 0xff;
}

/** Flags and Fragment Offset (16 bits; offset in units of 8 bytes). */
export function setFlagsFragment(buf: Buffer, off: number, word: number): void {
  buf[off + OFF_FLAGS_FRAG] = (word >> 8) & 0xff;
  buf[off + OFF_FLAGS_FRAG + 1] = word & 0xff;
}

/** Time to Live (8 bits), in hops. */
export function setTtl(buf: Buffer, off: number, ttl: number): void {
  buf[off + OFF_TTL] = ttl & 0xff;
}

/** Protocol (8 bits). */
export function setProtocol(buf: Buffer, off: number, protocol: number): void {
  buf[off + OFF_PROTOCOL] = protocol & 0xff;
}

/** Header Checksum (16 bits). */
export function setChecksum(buf: Buffer, off: number, checksum: number): void {
  buf[off + OFF_CHECKSUM] = (checksum >> 8) & 0xff;
  buf[off + OFF_CHECKSUM + 1] = checksum & 0xff;
}

/** Source Address (32 bits), from an int32 (or uint32). */
export function setSrc(buf: Buffer, off: number, addr: number): void {
  const o = off + OFF_SRC;
  buf[o] = (addr >> 24) & 0xff;
  buf[o + 1] = (addr >> 16) & 0xff;
  buf[o + 2] = (addr >> 8) & 0xff;
  buf[o + 3] = addr & 0xff;
}

/** Destination Address (32 bits), from an int32 (or uint32). */
export function setDst(buf: Buffer, off: number, addr: number): void {
  const o = off + OFF_DST;
  buf[o] = (addr >> 24) & 0xff;
  buf[o + 1] = (addr >> 16) & 0xff;
  buf[o + 2] = (addr >> 8) & 0xff;
  buf[o + 3] = addr & 0xff;
}

/**
 * The Header Checksum value for the header at `off` (IHL * 4 bytes, options included), computed
 * as if the checksum field were zero (RFC 791 §3.1). Does not write it: see `setChecksum`.
 * Unchecked: IHL must be valid and the bytes present.
 */
export function computeHeaderChecksum(buf: Buffer, off: number): number {
  const hlen = getHeaderLength(buf, off);
  // Sum the words before and after the checksum field, skipping it (so the field need not be 0).
  const sum = onesSum(buf, off + OFF_CHECKSUM + 2, hlen - OFF_CHECKSUM - 2, onesSum(buf, off, OFF_CHECKSUM, 0));
  return ~sum & 0xffff;
}
