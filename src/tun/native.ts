/**
 * Typed face of the native addon (`native/ipipd.cc`), the only place ipipd makes syscalls.
 *
 * The addon is thin: it opens the TUN device, the raw IP-in-IP (RFC 2003, protocol 4) socket
 * and the rtnetlink socket (whose messages src/tun/rtnetlink.ts builds and parses), moves
 * batches of packets between them and buffers that JavaScript owns, and reports errors as
 * `Error`s whose `code` is the errno symbol. All logic stays in JavaScript.
 *
 * This module finds the built addon by walking up from its own directory to the package root
 * (the first folder holding `package.json`), so the same code works from `src/tun/native.ts`
 * under vitest and from `dist/src/tun/native.js` after `tsc`.
 *
 * Conventions shared by every method:
 * - An IPv4 address is a signed 32-bit integer in network byte order, as `buf.readInt32BE`
 *   returns it (0 = INADDR_ANY); unsigned values (`>>> 0`) are accepted too.
 * - Packet batches are described by `Int32Array`s of offsets and lengths into one slab.
 * - Data-path calls (`writeTun`, `sendRaw`, `sendPacket`, the Reader) never throw for a per-packet error;
 *   wrong argument types throw `TypeError`, impossible sizes `RangeError`.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { constants as osConstants } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ERRNO_NAMES = new Map<number, string>(Object.entries(osConstants.errno).map(([k, v]) => [v, k]));

/** An errno's symbol as the addon names it in `code`: 'EAGAIN' for EAGAIN's number; 'E<n>' for one Node does not name. */
export function errnoLabel(errno: number): string {
  return ERRNO_NAMES.get(errno) ?? `E${errno}`;
}

/** A system error from the addon: `code` is the errno symbol ('EPERM', 'EBUSY', ... or 'E<n>'). */
export interface NativeError extends Error {
  /** errno symbol, e.g. 'EBADF'. */
  code: string;
  /** errno value (positive, as in C). */
  errno: number;
  /** the system call that failed, e.g. 'ioctl', 'bind', 'read', 'uv_poll'. */
  syscall: string;
}

/** Reader kind: 0 = TUN (read(2) per packet until EAGAIN), 1 = raw socket (recvmmsg(2)), 2 = UDP socket (recvmmsg(2), with `info`), 3 = netlink socket (recvmmsg(2)). */
export type ReaderKind = 0 | 1 | 2 | 3;

/** Reader kind for a TUN file descriptor. */
export const READER_TUN = 0;
/** Reader kind for a raw socket. */
export const READER_RAW = 1;
/** Reader kind for a UDP socket (FOU): also fills `info`, UDP_INFO_INTS int32s per datagram. */
export const READER_UDP = 2;
/**
 * Reader kind for a netlink socket (src/tun/nl-socket.ts): one datagram per slot; `lens[i]` -2
 * for a datagram not sent by the kernel (another process writing to our port). A pending socket
 * error (ENOBUFS: the kernel dropped messages for us) is reported to `onError` with its own code
 * and the Reader goes on. The Reader never keeps the event loop alive.
 */
export const READER_NETLINK = 3;
/** int32s per datagram in a UDP Reader's `info`: source address, source port, UDP_GRO segment size (0: none), TOS. */
export const UDP_INFO_INTS = 4;

export interface NativeBinding {
  /**
   * Open /dev/net/tun (O_RDWR|O_NONBLOCK|O_CLOEXEC), TUNSETIFF IFF_TUN|IFF_NO_PI with the given
   * name (<= 15 bytes, '' lets the kernel choose), returning the fd and the kernel's name; throws
   * a NativeError (code, errno, syscall, message naming the device), e.g. 'EINVAL' for a name too
   * long, 'EBUSY' for a name in use.
   *
   * Offload mode, `options.vnetHdr`: IFF_VNET_HDR and TUNSETVNETHDRSZ `VNET_HDR_LEN` (10), then
   * TUNSETOFFLOAD `options.offload` (TUN_F_* flags, default 0). Every packet read then starts with
   * a 10-byte struct virtio_net_hdr (src/ipip/vnet.ts parses it), and every packet written must
   * start with one (all zero for a plain packet). `offload` without `vnetHdr` is a RangeError.
   *
   * `options.multiQueue`: IFF_MULTI_QUEUE. Each call with the same name and the same options
   * attaches one more queue to the device and returns its fd (the kernel spreads the packets it
   * sends into the TUN over the queues by flow); the device lives until the last queue's fd is
   * closed. Mixing single- and multi-queue opens of one name fails with 'EINVAL'. Open every
   * queue with the same options: the kernel keeps the first open's `vnetHdr` and silently
   * ignores a different one later.
   */
  openTun(name: string, options?: { vnetHdr?: boolean; offload?: number; multiQueue?: boolean }): { fd: number; name: string };
  /**
   * Open a non-blocking raw AF_INET socket of `protocol` (default IPPROTO_IPIP = 4; ipipd also
   * opens one of ICMP = 1) with IP_HDRINCL, set SO_RCVBUF/SO_SNDBUF to the sizes in bytes (forced
   * past the sysctl limits when permitted; 0 keeps the kernel default) and bind it to localAddr
   * (0 = INADDR_ANY), returning the fd; throws a NativeError like openTun.
   *
   * `filter`: a classic BPF program, `struct sock_filter` entries (8 bytes each, host byte
   * order; 1 to 4096 of them, else a RangeError), attached with SO_ATTACH_FILTER before the bind;
   * what was queued before it is dropped. The queue steering of io.queues > 1 is one
   * (src/tun/steering.ts `steeringFilter`). A program the kernel refuses: 'EINVAL', syscall
   * 'setsockopt'.
   */
  openRaw(localAddr: number, rcvbuf: number, sndbuf: number, protocol?: number, filter?: Uint8Array): number;
  /**
   * TUNSETOFFLOAD `flags` (TUN_F_*) on a TUN opened with `vnetHdr`: what the reader takes from
   * now on. Throws a NativeError (syscall 'ioctl'): 'EINVAL' for flags the kernel does not know
   * (TUN_F_USO4/6 before Linux 6.2, or one of the two without the other), 'EBADF'/'ENOTTY' for an
   * fd that is not such a TUN; a RangeError for flags outside the TUN_F_* set.
   */
  setTunOffload(fd: number, flags: number): void;
  /** Name the calling thread (pthread_setname_np; shown by `top -H`, /proc/<pid>/task/<tid>/comm): 1 to 15 bytes, else a RangeError. */
  setThreadName(name: string): void;
  /** mallopt(M_ARENA_MAX, n): threads started later share at most n malloc arenas (src/daemon/footprint.ts). */
  limitMallocArenas(n: number): void;
  /** malloc_trim(0): free pages of every malloc arena back to the kernel; true if any was released. */
  trimMemory(): boolean;
  /** V8 MemoryPressureNotification(kCritical) on this thread: a full collection that returns emptied heap pages. Stalls the thread. */
  releaseHeap(): void;
  /**
   * Send `message` as one datagram to the Unix datagram socket `path` (an absolute path, or
   * '@name' for an abstract socket), from a socket opened and closed for it: the sd_notify
   * protocol. Throws a NativeError ('ENOENT', 'ECONNREFUSED', ...), RangeError for a bad path.
   */
  notifyDatagram(path: string, message: string): void;
  /** close(2) the fd; throws a NativeError with code 'EBADF' if it is not open (closing twice is the caller's bug). */
  close(fd: number): void;
  /** Write packets i = 0..n-1, each `slab[offs[i], offs[i] + lens[i])`, to the TUN with one write(2) each; never throws per packet: returns the number written, with res[0] = packets that failed and res[1] = errno of the last failure (0 if none; EINVAL for a packet outside the slab); each failed packet's lens[i] is replaced by -errno, so the caller can tell which ones. */
  writeTun(fd: number, slab: Buffer, offs: Int32Array, lens: Int32Array, n: number, res: Int32Array): number;
  /** Send packets i = 0..n-1 (complete IPv4 datagrams with their own header, IP_HDRINCL) to dsts[i] with sendmmsg(2), skipping and counting each packet that fails (EAGAIN, ENOBUFS, EMSGSIZE, ...) until all are attempted; never throws per packet: returns the number sent, with res[0] = failures and res[1] = last errno (0 if none); each failed packet's lens[i] is replaced by -errno. */
  sendRaw(fd: number, slab: Buffer, offs: Int32Array, lens: Int32Array, dsts: Int32Array, n: number, res: Int32Array): number;
  /**
   * `sendRaw` for `underlay.send: packet`: packet i goes to the next hop of `hops` entry
   * `hopOf[i]` (HOP_INTS int32s per peer: ifindex, MAC bytes 0-3 big-endian, MAC bytes 4-5 in
   * the top 16 bits; see src/daemon/nexthop.ts), with sendmmsg(2) on `fd`, an AF_PACKET socket
   * from `openPacket`: the kernel adds the link-layer header, and does no route lookup and no IP
   * output processing (no netfilter OUTPUT/POSTROUTING). Every packet goes this way, with no
   * fallback: src/dataplane/underlay-send.ts picks the packets that go here and those that go
   * through `sendRaw`. A packet whose hopOf is outside the table fails with EINVAL; an ifindex
   * the kernel does not know, with its errno (ENXIO). Results as `sendRaw`'s; the discard fd
   * discards.
   */
  sendPacket(fd: number, slab: Buffer, offs: Int32Array, lens: Int32Array, hopOf: Int32Array, n: number, res: Int32Array, hops: Int32Array): number;
  /**
   * FOU: open a non-blocking UDP socket bound to `localAddr:port` (port 0: an ephemeral one),
   * with IP_MTU_DISCOVER IP_PMTUDISC_PROBE (outer DF set, only the route's device MTU limits a
   * send, as IP_HDRINCL on the raw socket) and SO_RCVBUF/SO_SNDBUF as `openRaw`. `options.gro`:
   * IP_RECVTOS, and UDP_GRO if the kernel takes it (`gro` in the result says whether it did);
   * `options.sendOnly`: a socket filter drops everything it would receive (the per-flow
   * source-port sockets). Returns the fd and the bound port; throws a NativeError
   * ('EADDRINUSE', ...), syscall 'bind'/'setsockopt'/'socket'.
   */
  openUdp(localAddr: number, port: number, rcvbuf: number, sndbuf: number, options?: { gro?: boolean; sendOnly?: boolean }): { fd: number; port: number; gro: boolean };
  /**
   * FOU: send packets i = 0..n-1 (`slab[offs[i], offs[i] + lens[i])`, each an inner IPv4 packet:
   * the whole UDP payload) to `dsts[i]:port` from socket `fds[i]` (the discard fd discards), with
   * sendmmsg(2). With `gsoMax` > 1, consecutive packets with the same socket and destination
   * whose sizes are equal (the last may be shorter) leave as one send with UDP_SEGMENT, up to
   * `gsoMax` (<= 64) segments and 65507 bytes. Never throws per packet: returns the number sent;
   * res[0] failures, res[1] last errno, res[2] UDP_SEGMENT sends, res[3] packets in them, res[4]
   * the errno with which the kernel refused a UDP_SEGMENT send (EIO, EINVAL, ENOPROTOOPT,
   * EOPNOTSUPP), 0 if none: those packets, and the rest of the call, then went one by one. A
   * failed packet's lens[i] becomes -errno. `res` needs 5 elements. `tos` (optional): each
   * datagram's outer TOS byte (an IP_TOS cmsg when not 0; one UDP_SEGMENT send has one TOS).
   * `heads`, `tails` (optional, together): `heads[i]` > 0 makes packet i two pieces, its first
   * `heads[i]` bytes at `offs[i]` and the other `lens[i] - heads[i]` at `tails[i]` (a TSO
   * segment's headers and its payload inside the super-packet, sent without a copy).
   */
  sendUdp(slab: Buffer, offs: Int32Array, lens: Int32Array, dsts: Int32Array, fds: Int32Array, n: number, res: Int32Array, port: number, gsoMax: number, tos?: Int32Array, heads?: Int32Array, tails?: Int32Array): number;
  /**
   * Open a non-blocking NETLINK_ROUTE socket (SOCK_RAW, close-on-exec) with SO_RCVBUF `rcvbuf`
   * bytes (forced when permitted; 0 keeps the default), extended and capped ACKs where the kernel
   * has them (NETLINK_EXT_ACK, NETLINK_CAP_ACK), bound to a port the kernel picks: returns the fd
   * and that port (the nlmsg_pid of the kernel's replies to it). Throws a NativeError.
   */
  openNetlink(rcvbuf: number): { fd: number; port: number };
  /** Join rtnetlink multicast group `group` (RTNLGRP_*, NETLINK_ADD_MEMBERSHIP); throws a NativeError (syscall 'setsockopt'). */
  netlinkJoin(fd: number, group: number): void;
  /** Send one request (`msg`: whole netlink messages) to the kernel with sendto(2); throws a NativeError (syscall 'sendto'), e.g. 'EAGAIN' when the send buffer is full. */
  netlinkSend(fd: number, msg: Uint8Array): void;
  /** Open a non-blocking AF_PACKET SOCK_DGRAM socket that receives nothing (protocol 0), for `sendPacket`, with SO_SNDBUF `sndbuf` bytes (forced when permitted; 0 keeps the default); throws a NativeError (e.g. 'EPERM' without CAP_NET_RAW). */
  openPacket(sndbuf: number): number;
  /**
   * Polls `fd` with libuv (uv_poll on the Node loop: no threads, no busy loop) and on each
   * readable wake-up drains it into the slab and calls `onBatch(n)` synchronously for packets in
   * slots 0..n-1, at most 16 batches per wake-up, and no further batch once it has read 128 KiB
   * in that wake-up (the rest on the next one), so that bulk traffic on one fd leaves the loop
   * to the others in between.
   *
   * Buffer ownership: the slab is a pool, not a slab of kept slices. Packet i is
   * `slab[i * slotSize + headroom, i * slotSize + headroom + lens[i])`; it is overwritten as
   * soon as `onBatch` returns, so copy anything you keep. `lens[i] === -1` means the packet did
   * not fit its slot (slotSize - headroom bytes; for a TUN, a packet that exactly fills the
   * slot counts as truncated too) and its bytes must be ignored.
   *
   * Packed mode (a READER_TUN given `offs` as `aux`): packet i is at `offs[i] + headroom`
   * instead; offs[0] = 0 and each next slot starts at the first 64-byte boundary after the
   * previous packet (after a whole slotSize for a truncated one). A packet is read only while a
   * whole slot still fits in the slab (slab.length >= slotSize suffices), so a batch may end
   * early for want of room; the Reader then reads on in the same wake-up.
   *
   * Constructor checks: slab.length >= batch * slotSize, lens.length >= batch,
   * 0 <= headroom < slotSize, 1 <= batch <= 1024 (TypeError/RangeError otherwise). One Reader
   * per fd. A read error other than EAGAIN/EINTR ends the wake-up after the packets read so far
   * were delivered and calls `onError` once; the Reader stays started. If libuv itself reports
   * a poll error (e.g. 'EBADF' with syscall 'uv_poll' when a TUN's device is deleted), libuv
   * has already stopped the handle: the Reader is stopped and `onError` is called. An exception
   * thrown by `onBatch`/`onError` becomes an ordinary uncaught exception.
   */
  Reader: new (
    fd: number,
    kind: ReaderKind,
    slab: Buffer,
    lens: Int32Array,
    slotSize: number,
    headroom: number,
    batch: number,
    onBatch: (n: number) => void,
    onError: (err: NativeError) => void,
    /**
     * READER_UDP: UDP_INFO_INTS int32s per slot (required), overwritten with each batch like the
     * slab. READER_TUN: optional `offs`, at least batch int32s: packed mode, below.
     */
    aux?: Int32Array,
  ) => NativeReader;
  /** Size of an interface name buffer including its NUL (16): names have at most IFNAMSIZ - 1 bytes. */
  readonly IFNAMSIZ: number;
  /** IP protocol number of IP-in-IP (4, RFC 2003). */
  readonly IPPROTO_IPIP: number;
  /**
   * The discard fd (-2): `writeTun`, `sendRaw` and `sendPacket` given it check every packet as
   * usual, then count it as written, with no system call. Only for the data path's JIT warm-up.
   */
  readonly DISCARD_FD: number;
  /** int32s per peer in `sendPacket`'s next-hop table (3). */
  readonly HOP_INTS: number;
  /** Size of the struct virtio_net_hdr in front of each packet in offload mode (10). */
  readonly VNET_HDR_LEN: number;
  /** TUNSETOFFLOAD: the reader completes checksums (virtio_net_hdr NEEDS_CSUM). */
  readonly TUN_F_CSUM: number;
  /** TUNSETOFFLOAD: the reader segments TCP/IPv4 super-packets (GSO TCPV4). */
  readonly TUN_F_TSO4: number;
  /** TUNSETOFFLOAD: the reader segments TCP/IPv6 super-packets. */
  readonly TUN_F_TSO6: number;
  /** TUNSETOFFLOAD: TSO with the ECN (CWR) bit. */
  readonly TUN_F_TSO_ECN: number;
  /** TUNSETOFFLOAD: UDP fragmentation offload (legacy). */
  readonly TUN_F_UFO: number;
  /**
   * TUNSETOFFLOAD: the reader segments UDP/IPv4 super-packets (GSO UDP_L4, Linux 6.2+; older
   * kernels refuse the flag with EINVAL).
   */
  readonly TUN_F_USO4: number;
  /** TUNSETOFFLOAD: the same for UDP/IPv6. */
  readonly TUN_F_USO6: number;
}

/** A batched reader on one fd (see `NativeBinding.Reader`); created stopped. */
export interface NativeReader {
  /** Begin polling; while started it holds a strong reference to itself, slab, lens and callbacks and keeps the loop alive, so a GC never closes it; idempotent; throws 'EBADF' after close(). */
  start(): void;
  /** Stop polling (idempotent); releases the loop reference. */
  stop(): void;
  /** Stop and release the uv handle (uv_close) and all references; the fd is NOT closed (close it after). Idempotent. */
  close(): void;
}

/** Absolute path of the built addon: `<package root>/build/Release/ipipd_native.node`. */
export function nativeAddonPath(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) {
      return join(dir, 'build', 'Release', 'ipipd_native.node');
    }
    const up = dirname(dir);
    if (up === dir) {
      throw new Error(`no package.json above ${fileURLToPath(import.meta.url)}`);
    }
    dir = up;
  }
}

function load(): NativeBinding {
  const path = nativeAddonPath();
  try {
    return createRequire(import.meta.url)(path) as NativeBinding;
  } catch (cause) {
    throw new Error(
      // No "ipipd:" and no fix here: the CLI says both once (ERR_NATIVE_LOAD).
      `cannot load the native addon ${path} (${cause instanceof Error ? cause.message.split('\n')[0] : String(cause)})`,
      { cause },
    );
  }
}

/** The loaded addon (loaded once, when this module is first imported). */
export const native: NativeBinding = load();
