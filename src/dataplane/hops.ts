/**
 * The next-hop table of `underlay.send: packet` (docs/performance.md, "AF_PACKET sending"): one
 * Int32Array, `HOP_INTS` int32s per peer index, that the data path sends by (native
 * `sendPacket`) and the control plane fills from the kernel's route and neighbour tables
 * (src/daemon/nexthop.ts `NextHops`). Flow: the layout (`HOP_INTS`), the writer (`writeHop`),
 * one entry as plain numbers and back (`hopEntry` / `setHopEntry`, what a queue worker is
 * sent), and the reader for the status report (`readHop`).
 *
 * An entry: [ifindex (0: none, send through the raw socket), MAC bytes 0-3 big-endian, MAC
 * bytes 4-5 in the top 16 bits]. No I/O.
 */
import { native } from '../tun/native.js';

/** int32s per peer in the next-hop table: the native sendPacket's, which reads it. */
export const HOP_INTS: number = native.HOP_INTS;

/** Write peer `i`'s entry: ifindex 0 (none) or ifindex and a 6-byte MAC. */
export function writeHop(table: Int32Array, i: number, ifindex: number, mac: Uint8Array | null): void {
  const o = i * HOP_INTS;
  if (ifindex <= 0 || mac === null || mac.length !== 6) {
    table[o] = 0;
    table[o + 1] = 0;
    table[o + 2] = 0;
    return;
  }
  table[o + 1] = (mac[0]! << 24) | (mac[1]! << 16) | (mac[2]! << 8) | mac[3]!;
  table[o + 2] = (mac[4]! << 24) | (mac[5]! << 16);
  table[o] = ifindex;
}

/** Peer `i`'s entry, its HOP_INTS int32s as they are (what a queue worker is sent). */
export function hopEntry(table: Int32Array, i: number): number[] {
  return Array.from(table.subarray(i * HOP_INTS, (i + 1) * HOP_INTS));
}

/** Put `entry` (from `hopEntry`) in as peer `i`'s; false, and nothing written, if it does not fit. */
export function setHopEntry(table: Int32Array, i: number, entry: readonly number[]): boolean {
  if (entry.length !== HOP_INTS || i < 0 || (i + 1) * HOP_INTS > table.length) return false;
  table.set(entry, i * HOP_INTS);
  return true;
}

/** Peer `i`'s entry as [ifindex, "aa:bb:cc:dd:ee:ff"], or null for none. */
export function readHop(table: Int32Array, i: number): [number, string] | null {
  const o = i * HOP_INTS;
  if (table[o]! <= 0) return null;
  const hi = table[o + 1]!;
  const lo = table[o + 2]!;
  const bytes = [hi >>> 24, (hi >>> 16) & 255, (hi >>> 8) & 255, hi & 255, lo >>> 24, (lo >>> 16) & 255];
  return [table[o]!, bytes.map((b) => b.toString(16).padStart(2, '0')).join(':')];
}
