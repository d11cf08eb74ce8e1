/**
 * Public surface of src/ipip: RFC 2003 encapsulation/decapsulation (`Tunnel`), per-peer soft
 * state (`Peer`), the verdict enum shared with counters and the README, the IPv4 header and
 * checksum helpers the daemon's ICMP code may reuse, and the TUN offloads (`gso.ts`: virtio_net_hdr,
 * segmentation, coalescing). Pure: no I/O.
 */
export * from './checksum.js';
export * from './fragment.js';
export * from './gso.js';
export * from './icmp.js';
export * from './ipv4.js';
export * from './peer.js';
export * from './tcp.js';
export * from './tunnel.js';
export * from './verdict.js';
