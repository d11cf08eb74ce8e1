/**
 * Calico's cross-subnet mode (`encap.mode`, Calico's `ipipMode: CrossSubnet`) and the node's own
 * blocks (`routes.own_blocks`), the pure half (README "Cross-subnet mode and own blocks"); what
 * installs the routes is src/daemon/plain-routes.ts. Flow, in the order of this file:
 *   1. `underlaySubnet`: the subnet a peer's endpoint is compared against: `encap.subnet` if
 *      given, else underlay.address with the prefix length it has on its device, as the kernel
 *      reports it (Calico compares against the node's IPv4 CIDR the same way);
 *   2. `sameSubnet`, `plainRoutes`: which configured prefixes go by a plain route via their
 *      peer's endpoint (no IPIP), and `tunnelled`: whether a prefix still goes into the TUN;
 *   3. `clusterCheck`: the config rules of `encap.subnet` and `routes.own_blocks`;
 *   4. `describeEncapMode`: the line of `ipipd check` and the start-up log.
 * A packet for a plain-routed peer that still reaches the TUN (a stale or foreign route into the
 * TUN, or the moment of a reload that switches the mode) is forwarded through the tunnel, not
 * dropped: the peer stays in the data path's table, and its ipipd decapsulates IPIP from us
 * whatever its own mode, so the packet is delivered; its tunnel figures (the peer's txPackets)
 * show that it happened. Peers learned from kernel routes are not touched: with
 * `routes.source: kernel` the routing engine (BIRD) decides which prefixes go plain.
 */
import { formatPrefix, maskOf, prefixContains, prefixesOverlap } from '../routing/prefix.js';
import type { Address, Config, Prefix } from './config.js';

/** A prefix reached by a plain route via its peer's underlay address on the underlay device. */
export interface PlainRoute {
  readonly prefix: Prefix;
  readonly via: Address;
  /** The peer's name, for messages. */
  readonly peer: string;
}

/** The peer shape the decision reads (a configured peer or a live one, src/daemon/peer-set.ts). */
interface PeerLike {
  readonly name: string;
  readonly endpoint: Address;
  readonly prefixes: readonly (Prefix & { readonly source?: string })[];
}

/**
 * The underlay subnet of `c`: `encap.subnet`, else underlay.address masked to `kernelLen`, the
 * prefix length the kernel lists with that address on its device (/32 there: no peer shares it).
 */
export function underlaySubnet(c: Config, kernelLen: number): Prefix {
  if (c.encap.subnet) return c.encap.subnet;
  const addr = c.underlay.address.value & maskOf(kernelLen);
  return { text: formatPrefix(addr, kernelLen), addr, len: kernelLen };
}

/** Whether `endpoint` is on the underlay subnet `subnet` (reachable without a router). */
export function sameSubnet(subnet: Prefix, endpoint: number): boolean {
  return prefixContains(subnet.addr, subnet.len, endpoint);
}

/**
 * The plain routes ipipd installs for `peers` under `c`: with `encap.mode: cross-subnet` and
 * `routes.install`, every configured prefix (not a kernel-learned one) of a peer on the subnet.
 */
export function plainRoutes(c: Config, peers: readonly PeerLike[], kernelLen: number): PlainRoute[] {
  if (c.encap.mode !== 'cross-subnet' || !c.routes.install) return [];
  const subnet = underlaySubnet(c, kernelLen);
  const out: PlainRoute[] = [];
  for (const p of peers) {
    if (!sameSubnet(subnet, p.endpoint.value)) continue;
    for (const x of p.prefixes) if (x.source === undefined || x.source === 'config') out.push({ prefix: x, via: p.endpoint, peer: p.name });
  }
  return out;
}

/** A plain route as `ip route` shows it (without proto and metric). */
export function plainRouteText(r: PlainRoute, dev: string): string {
  return `${r.prefix.text} via ${r.via.text} dev ${dev}`;
}

/** Whether peer `p`'s prefixes go into the TUN under `c` (false: by plain routes). */
export function tunnelled(c: Config, p: PeerLike, kernelLen: number): boolean {
  return c.encap.mode !== 'cross-subnet' || !sameSubnet(underlaySubnet(c, kernelLen), p.endpoint.value);
}

interface Problem {
  path: string;
  message: string;
}

/**
 * What `clusterCheck` reads of a config: the sections as they passed the schema; a peer that
 * failed it is `undefined`, at its index (the rules then check the others).
 */
interface ClusterInput {
  readonly underlay: { readonly address: Address };
  readonly encap: { readonly subnet?: Prefix | undefined };
  readonly routes: { readonly own_blocks: readonly Prefix[] };
  readonly peers: readonly (PeerLike | undefined)[];
}

/**
 * `encap.subnet` and `routes.own_blocks` (config.ts runs it with its other rules): the subnet
 * must hold this host's underlay address; an own block must not overlap another, a peer's prefix
 * (a peer's block would be blackholed here), the underlay address or a peer's endpoint (the
 * blackhole, more specific than the underlay's connected route, would cut the underlay).
 */
export function clusterCheck(c: ClusterInput): Problem[] {
  const problems: Problem[] = [];
  const own = c.underlay.address;
  const subnet = c.encap.subnet;
  if (subnet && !prefixContains(subnet.addr, subnet.len, own.value))
    problems.push({ path: 'encap.subnet', message: `${subnet.text} does not contain this host's underlay.address ${own.text}` });
  const blocks = c.routes.own_blocks;
  blocks.forEach((b, i) => {
    const at = `routes.own_blocks[${i}]`;
    blocks.slice(0, i).forEach((o, j) => {
      if (prefixesOverlap(b.addr, b.len, o.addr, o.len)) problems.push({ path: at, message: `${b.text} overlaps routes.own_blocks[${j}] ${o.text}` });
    });
    if (prefixContains(b.addr, b.len, own.value))
      problems.push({ path: at, message: `${b.text} contains this host's underlay.address ${own.text}: the blackhole would cut the underlay` });
    c.peers.forEach((p, k) => {
      if (p === undefined) return;
      if (prefixContains(b.addr, b.len, p.endpoint.value))
        problems.push({ path: at, message: `${b.text} contains peer ${p.name}'s endpoint ${p.endpoint.text}: the blackhole would cut the underlay` });
      p.prefixes.forEach((x, m) => {
        if (prefixesOverlap(b.addr, b.len, x.addr, x.len))
          problems.push({ path: at, message: `${b.text} overlaps peers[${k}].prefixes[${m}] ${x.text} (peer ${p.name}): a block is either this host's or a peer's` });
      });
    });
  });
  return problems;
}

/** The `encap.mode` line of `describeConfig` (`ipipd check`, the start-up log). */
export function describeEncapMode(c: Config): string {
  if (c.encap.mode === 'always') return 'encap mode always: every peer through the tunnel';
  const s = c.encap.subnet;
  const plain = s ? c.peers.filter((p) => sameSubnet(s, p.endpoint.value)).map((p) => p.name) : [];
  const which = s ? (plain.length ? ` (${plain.join(', ')})` : ' (none of the peers)') : '';
  const how = c.routes.install ? `by a plain route via its endpoint${which}` : 'by a plain route, which routes.install: false leaves to you';
  return `encap mode cross-subnet: a peer inside ${s ? s.text : "underlay.address's subnet on its device"} ${how}, others through the tunnel`;
}
