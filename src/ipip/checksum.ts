/**
 * The Internet checksum (RFC 1071): the 16-bit one's complement of the one's complement sum of
 * the data taken as big-endian 16-bit words, an odd last byte padded on the right with zero.
 *
 * Flow, in the order the functions appear: `foldSum` reduces a running sum to 16 bits (end-around
 * carry); `onesSum` adds a byte range to a running sum; `finishChecksum` turns a sum into the
 * value written in a header; `internetChecksum` is the two together over one range;
 * `int32Sum` is the contribution of a 32-bit address (for per-peer partial sums, STYLE rule 7);
 * `checksumUpdate16` / `checksumUpdate32` patch an existing checksum when one field changes
 * (RFC 1624 eqn. 3).
 *
 * Why partial sums work (RFC 1071 §2 (B), (C)): the one's complement sum is commutative and
 * associative, and folding carries early does not change the result, so the sum of a header's
 * fixed fields can be computed once per peer and the per-packet fields added to it.
 * Representation: a *sum* is a non-negative integer; after `foldSum` it is in 0..0xffff and
 * equal to the full sum modulo 0xffff (0 only if every word was 0). Functions return folded sums
 * so that they stay small integers (V8 Smis) on the hot path.
 *
 * Pure, allocation-free, never throws.
 */
import type { Buffer } from 'node:buffer';

/**
 * Folds carries back into the low 16 bits (RFC 1071 §4.1, "fold 32-bit sum to 16 bits").
 * `sum` must be an integer in 0..0xffffffff; returns 0..0xffff.
 */
export function foldSum(sum: number): number {
  sum = (sum & 0xffff) + (sum >>> 16); // <= 0x1fffe
  return (sum & 0xffff) + (sum >>> 16); // <= 0xffff
}

/**
 * Adds the bytes `buf[off, off+len)` as big-endian 16-bit words to `initial` and returns the
 * folded sum (not complemented). `initial` is a sum in 0..0x3fffffff (typically an earlier
 * result, 0..0xffff). An odd final byte counts as the high byte of a word whose low byte is 0,
 * so sums of consecutive ranges combine correctly only when all but the last have even length.
 *
 * Unchecked: the range must lie inside `buf` (bytes past the end read as 0).
 *
 * Reads four bytes per step; the sum is folded every 16 KiB so it stays below 2^30 (a V8 Smi)
 * for any length.
 */
export function onesSum(buf: Buffer, off: number, len: number, initial: number): number {
  let sum = initial;
  let i = off;
  const end = off + len;
  const end4 = off + (len & ~3);
  while (i < end4) {
    // 4096 steps of at most 2 * 0xffff each: < 2^29, plus a folded sum < 2^17.
    const chunkEnd = end4 - i > 16384 ? i + 16384 : end4;
    while (i < chunkEnd) {
      sum += ((buf[i] << 8) | buf[i + 1]) + ((buf[i + 2] << 8) | buf[i + 3]);
      i += 4;
    }
    sum = (sum & 0xffff) + (sum >>> 16);
  }
  if (end - i >= 2) {
    sum += (buf[i] << 8) | buf[i + 1];
    i += 2;
  }
  if (i < end) sum += buf[i] << 8;
  return foldSum(sum);
}

/** The checksum field value for a sum (0..0xffffffff): the one's complement of the folded sum. */
export function finishChecksum(sum: number): number {
  return ~foldSum(sum) & 0xffff;
}

/**
 * The Internet checksum of `buf[off, off+len)`. Over a header whose checksum field holds a
 * correct value the result is 0 (RFC 1071 §1 (3), verification); with the field zeroed it is
 * the value to write. Unchecked range, as `onesSum`.
 */
export function internetChecksum(buf: Buffer, off: number, len: number): number {
  return ~onesSum(buf, off, len, 0) & 0xffff;
}

/**
 * The sum contribution (0..0x1fffe) of a 32-bit field such as an IPv4 address, given as int32
 * or uint32: its high word plus its low word.
 */
export function int32Sum(value: number): number {
  return (value >>> 16) + (value & 0xffff);
}

/**
 * RFC 1624 eqn. 3: the new checksum `HC' = ~(~HC + ~m + m')` after one 16-bit word of the
 * covered data changes from `oldWord` (m) to `newWord` (m'). `checksum` is the field value
 * (0..0xffff). For an IPv4 header (whose sum is never 0, as the version nibble is 4) the result
 * equals a full recomputation, without eqn. 2's -0 pitfall (RFC 1624 §3).
 */
export function checksumUpdate16(checksum: number, oldWord: number, newWord: number): number {
  return ~foldSum((~checksum & 0xffff) + (~oldWord & 0xffff) + (newWord & 0xffff)) & 0xffff;
}

/**
 * RFC 1624 eqn. 3 applied to both halves of a 32-bit field (e.g. rewriting an address, as NAT
 * does). Values as int32 or uint32.
 */
export function checksumUpdate32(checksum: number, oldValue: number, newValue: number): number {
  const sum =
    (~checksum & 0xffff) +
    (~(oldValue >>> 16) & 0xffff) +
    (~oldValue & 0xffff) +
    (newValue >>> 16) +
    (newValue & 0xffff);
  return ~foldSum(sum) & 0xffff;
}
