/**
 * Which way each outer packet leaves on the underlay (`underlay.send`), decided here so that the
 * addon only sends what it is given (STYLE rule 3): `sendRaw` through the raw IPIP socket, where
 * the kernel routes each packet, or, in packet mode, `sendPacket` through AF_PACKET straight to
 * the peer's next hop (its entry in the next-hop table, src/daemon/nexthop.ts), for peers that
 * have one. A peer's entry is the same for all its packets in a batch, so each peer's packets
 * take one way and keep their order.
 *
 * `underlaySend` first counts the packets with a next hop: when all or none have one (the usual
 * case) the batch goes out in one native call on the caller's arrays; a mixed batch is split
 * into the two ways through a small preallocated scratch, the next-hop way first, and each
 * failure mark is copied back to the caller's `lens`.
 */
import { native, type NativeBinding } from '../tun/native.js';
import { HOP_INTS } from './hops.js';

/** The two sends `underlaySend` uses: the native binding, or a fake in tests. */
export type UnderlayIo = Pick<NativeBinding, 'sendRaw' | 'sendPacket'>;

const DISCARD_FD: number = native.DISCARD_FD;

/**
 * Packets per native call when a mixed batch is split. A pool (STYLE rule 8) owned by this
 * module, one per thread (each worker loads its own copy), used only inside one synchronous
 * `underlaySend` call: no allocation per batch.
 */
const SPLIT = 256;
const splitOffs = new Int32Array(SPLIT);
const splitLens = new Int32Array(SPLIT);
/** The next hop's entry (next-hop way) or the destination (raw way) of each packet. */
const splitTo = new Int32Array(SPLIT);
/** Each packet's index in the caller's arrays. */
const splitFrom = new Int32Array(SPLIT);
const splitRes = new Int32Array(2);

/** Entry `p` of the next-hop table `hops` (`peers` entries) names a next hop. */
function hasHop(hops: Int32Array, peers: number, p: number): boolean {
  return p >= 0 && p < peers && hops[p * HOP_INTS]! > 0;
}

/**
 * Send packets 0..n-1 (`slab[offs[i], offs[i] + lens[i])` to `dsts[i]`, peer entry `hopOf[i]`)
 * on the underlay. `packetFd` -1: all through `rawFd`. Else a packet whose entry in `hops` has
 * an ifindex (> 0) goes through `packetFd` to that next hop, the others through `rawFd` (the
 * discard fd as `packetFd` discards both ways). Returns the number sent; as the native sends, a
 * failed packet's lens[i] becomes -errno, res[0] counts the failures and res[1] keeps the last
 * failure's errno (the raw way's, if both ways failed), 0 if none.
 */
export function underlaySend(
  io: UnderlayIo, rawFd: number, packetFd: number, hops: Int32Array,
  slab: Buffer, offs: Int32Array, lens: Int32Array, dsts: Int32Array, hopOf: Int32Array, n: number, res: Int32Array,
): number {
  if (packetFd === -1) return io.sendRaw(rawFd, slab, offs, lens, dsts, n, res);
  const rawWayFd = packetFd === DISCARD_FD ? DISCARD_FD : rawFd;
  const peers = (hops.length / HOP_INTS) | 0;
  let direct = 0;
  for (let i = 0; i < n; i++) if (hasHop(hops, peers, hopOf[i]!)) direct++;
  if (direct === n) return io.sendPacket(packetFd, slab, offs, lens, hopOf, n, res, hops);
  if (direct === 0) return io.sendRaw(rawWayFd, slab, offs, lens, dsts, n, res);
  let sent = 0;
  let failed = 0;
  let last = 0;
  // way 0: the next hops; way 1: the raw socket. Each in chunks of SPLIT, in the caller's order.
  for (let way = 0; way < 2; way++) {
    const viaHop = way === 0;
    let i = 0;
    while (i < n) {
      let m = 0;
      for (; i < n && m < SPLIT; i++) {
        const p = hopOf[i]!;
        if (hasHop(hops, peers, p) !== viaHop) continue;
        splitOffs[m] = offs[i]!;
        splitLens[m] = lens[i]!;
        splitTo[m] = viaHop ? p : dsts[i]!;
        splitFrom[m++] = i;
      }
      if (m === 0) break;
      sent += viaHop
        ? io.sendPacket(packetFd, slab, splitOffs, splitLens, splitTo, m, splitRes, hops)
        : io.sendRaw(rawWayFd, slab, splitOffs, splitLens, splitTo, m, splitRes);
      if (splitRes[0]! > 0) {
        failed += splitRes[0]!;
        last = splitRes[1]!;
        for (let j = 0; j < m; j++) if (splitLens[j]! < 0) lens[splitFrom[j]!] = splitLens[j]!;
      }
    }
  }
  res[0] = failed;
  res[1] = last;
  return sent;
}
