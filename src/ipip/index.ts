/**
 * Public surface of src/ipip: RFC 2003 encapsulation/decapsulation (`Tunnel`), per-peer soft
 * state (`Peer`), the verdict enum shared with counters and the README, the header views (IPv4,
 * TCP, UDP, virtio_net_hdr) and checksum helpers the daemon's ICMP code may reuse, and the TUN
 * offloads (`segment.ts`: checksum completion, TSO/USO; `coalesce.ts`: GRO). Pure: no I/O.
 */
export * from './checksum.js';
export * from './coalesce.js';
export * from './fou.js';
export * from './fragment.js';
export * from './icmp.js';
export * from './ipv4.js';
export * from './peer.js';
export * from './segment.js';
export * from './tcp.js';
export * from './tunnel.js';
export * from './udp.js';
export * from './verdict.js';
export * from './vnet.js';
