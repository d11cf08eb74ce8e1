/**
 * Fragmenting an inner datagram (RFC 791 §3.2, "Fragmentation and reassembly" procedure) so
 * that each piece fits the tunnel MTU toward a peer.
 *
 * RFC 2003 §5.1 lets the encapsulator either fragment the outer datagram or the inner one when
 * an inner packet without DF does not fit. ipipd fragments the **inner** packet: with IP_HDRINCL
 * the kernel never fragments our outer datagrams (README, "What ipipd does, RFC by RFC"), and
 * inner fragments are reassembled by the final destination, so the tunnel exit keeps no
 * reassembly state (the same choice a router makes when it forwards into a smaller link).
 *
 * Flow: `copyFragmentHeader` builds the header of a fragment after the first; `fragmentInner`
 * writes the fragments into caller-owned slots, each with `headroom` bytes before it for the
 * outer header, and reports their lengths. Options: the first fragment keeps all of them; later
 * fragments keep only those whose "copied" flag is set (RFC 791 §3.1, option type bit 0x80).
 * Pure: no allocation, no throws.
 */
import type { Buffer } from 'node:buffer';
import {
  FLAG_MF,
  FRAG_OFFSET_MASK,
  IPV4_MIN_HEADER,
  computeHeaderChecksum,
  getFlagsFragment,
  getHeaderLength,
  setChecksum,
  setFlagsFragment,
  setTotalLength,
  setVersionIhl,
} from './ipv4.js';

/** Option types without a length byte (RFC 791 §3.1): End of Option List and No Operation. */
const OPT_EOL = 0;
const OPT_NOP = 1;
const OPT_COPIED = 0x80;

/**
 * Copy the options of the header at `src[off..off+hl)` that must be copied into every fragment
 * to `dst[o..]`, padded to a multiple of 4 with EOL. Returns the header length written
 * (20 + options).
 */
function copyFragmentHeader(src: Buffer, off: number, hl: number, dst: Buffer, o: number): number {
  src.copy(dst, o, off, off + IPV4_MIN_HEADER);
  let w = o + IPV4_MIN_HEADER;
  let i = off + IPV4_MIN_HEADER;
  const end = off + hl;
  while (i < end) {
    const t = src[i];
    if (t === OPT_EOL) break;
    if (t === OPT_NOP) {
      i++;
      continue;
    }
    const l = i + 1 < end ? src[i + 1] : 0;
    if (l < 2 || i + l > end) break; // malformed option list: keep what was good
    if (t & OPT_COPIED) {
      src.copy(dst, w, i, i + l);
      w += l;
    }
    i += l;
  }
  while ((w - o) & 3) dst[w++] = OPT_EOL;
  return w - o;
}

/**
 * Split the IPv4 datagram `buf[off, off+len)` (validated; DF clear) into fragments of at most
 * `mtu` bytes. Fragment k is written at `slab[k*slotSize + headroom ...]`; its length goes to
 * `lens[k]`. Returns the number of fragments, or 0 if they would not fit the slots or `maxCount`
 * (the caller counts the packet as too big then), or if `mtu` leaves no room for 8 data bytes.
 */
export function fragmentInner(
  buf: Buffer,
  off: number,
  len: number,
  mtu: number,
  slab: Buffer,
  slotSize: number,
  headroom: number,
  lens: Int32Array,
  maxCount: number,
): number {
  const hl = getHeaderLength(buf, off);
  const flags = getFlagsFragment(buf, off);
  const baseOffset = flags & FRAG_OFFSET_MASK; // the datagram may itself be a fragment
  const lastMf = flags & FLAG_MF;
  const dataEnd = off + len;
  let data = off + hl;
  let count = 0;
  let unitOffset = baseOffset;
  while (data < dataEnd) {
    if (count >= maxCount) return 0;
    const o = count * slotSize + headroom;
    const fhl = count === 0 ? hl : copyFragmentHeader(buf, off, hl, slab, o);
    if (count === 0) buf.copy(slab, o, off, off + hl);
    // Data per fragment: a multiple of 8 bytes, except in the last one, which takes whatever
    // is left when that fits the MTU (RFC 791 §3.2; Linux ip_do_fragment does the same).
    const room = (mtu - fhl) & ~7;
    if (room <= 0) return 0;
    const remaining = dataEnd - data;
    const chunk = remaining <= mtu - fhl ? remaining : room;
    if (headroom + fhl + chunk > slotSize) return 0;
    const last = data + chunk >= dataEnd;
    buf.copy(slab, o + fhl, data, data + chunk);
    setVersionIhl(slab, o, 4, fhl >> 2);
    setTotalLength(slab, o, fhl + chunk);
    setFlagsFragment(slab, o, (flags & ~(FLAG_MF | FRAG_OFFSET_MASK)) | (last ? lastMf : FLAG_MF) | unitOffset);
    setChecksum(slab, o, computeHeaderChecksum(slab, o));
    lens[count] = fhl + chunk;
    count++;
    data += chunk;
    unitOffset += chunk >> 3;
    if (unitOffset > FRAG_OFFSET_MASK && data < dataEnd) return 0;
  }
  return count;
}
