/**
 * Changes to what a next hop depends on (`underlay.send: packet`, src/daemon/nexthop.ts): the
 * kernel's IPv4 neighbour entries (RTNLGRP_NEIGH: an entry created, resolved, gone STALE,
 * FAILED or deleted, a link-layer address changed) and IPv4 routes (RTNLGRP_IPV4_ROUTE), on an
 * rtnetlink socket of its own (src/tun/nl-socket.ts). The kernel announces every state change
 * the next-hop table cares about, REACHABLE -> STALE included (neigh_timer_handler notifies it),
 * so the table can be read again when something changed instead of every second.
 *
 * Nothing escapes the socket's callback: a message that does not parse is skipped, and a burst
 * that overflowed the socket (ENOBUFS: events were lost) is reported as `lost`, after which the
 * listener reads everything again.
 */
import { NetlinkSocket } from './nl-socket.js';
import { AF_INET, decodeNeigh, decodeRoute, RTM_DELNEIGH, RTM_DELROUTE, RTM_NEWNEIGH, RTM_NEWROUTE, RTNLGRP_IPV4_ROUTE, RTNLGRP_NEIGH } from './rtnetlink.js';

export interface HopEvents {
  /** An IPv4 neighbour entry of `dst` on `ifindex` changed or went away. */
  neighbour(ifindex: number, dst: number): void;
  /** An IPv4 route to `dst`/`dstLen` was added, changed or deleted. */
  route(dst: number, dstLen: number): void;
  /** Events were lost (the socket overflowed): anything may have changed. */
  lost(): void;
}

/** Subscribe; `close()` to end it. Throws (NetlinkError) when the socket cannot be opened or joined. */
export function watchHops(on: HopEvents): { close(): void } {
  const sock = new NetlinkSocket({
    onEvent: (type, b, off, len) => {
      if (type === RTM_NEWNEIGH || type === RTM_DELNEIGH) {
        const m = decodeNeigh(b, off, len);
        if (m.family === AF_INET && m.dst !== undefined) on.neighbour(m.ifindex, m.dst);
      } else if (type === RTM_NEWROUTE || type === RTM_DELROUTE) {
        const m = decodeRoute(b, off, len);
        if (m.family === AF_INET) on.route(m.dst ?? 0, m.dstLen);
      }
    },
    onError: (err) => {
      if (err.code !== 'EBADMSG') on.lost();
    },
  });
  try {
    sock.join(RTNLGRP_NEIGH);
    sock.join(RTNLGRP_IPV4_ROUTE);
  } catch (err) {
    sock.close();
    throw err;
  }
  return { close: () => sock.close() };
}
