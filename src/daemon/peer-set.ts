/**
 * The live peer set and what a reload changes in it (README "Live changes"). Pure: no I/O.
 * Flow, in the order of this file:
 *   1. `LivePeer`: a peer as the data path runs it, configured or learned from a kernel route;
 *   2. `livePeers`: the config's peers plus the kernel-learned routes (src/daemon/kernel-routes.ts),
 *      each kernel route checked against the same rules as a configured prefix (RFC 2003 §3.2
 *      loops, `underlay.allowed_endpoints`), refused ones returned with the reason;
 *   3. `restartKeys`: the config keys that differ and cannot change while running;
 *   4. `diffPeers` / `describeChange`: what a reload does, as the lines `ipipd reload` and
 *      `ipipd check --diff` print (one function for both, so what one prints the other does).
 */
import { formatIPv4, prefixContains, prefixesOverlap } from '../routing/prefix.js';
import { fouInUse, type Address, type Config, type Prefix } from './config-plain.js';
import { plainRouteText, plainRoutes, tunnelled, type PlainRoute } from './cross-subnet.js';

export type PrefixSource = 'config' | 'kernel';

export interface LivePrefix extends Prefix {
  readonly source: PrefixSource;
}

export interface LivePeer {
  readonly name: string;
  readonly endpoint: Address;
  readonly prefixes: readonly LivePrefix[];
  readonly mtu?: number | undefined;
  /** `ipip` or `fou`: the peer's `encap`, or `fou.kernel_peers` for a kernel-learned one. */
  readonly encap: 'ipip' | 'fou';
  /** `config`: from `peers`; `kernel`: a gateway of kernel routes only. */
  readonly source: PrefixSource;
}

/** A route of the TUN with a gateway, as the route watch saw it (src/tun/route-watch.ts). */
export interface KernelRoute {
  readonly prefix: Prefix;
  readonly gateway: number;
}

/** Why a kernel route did not become a peer prefix. */
export interface Refusal {
  readonly route: string;
  readonly reason: string;
}

/** A kernel-learned peer's name: `kernel:` and its endpoint (config.ts reserves the `kernel:` names). */
function kernelName(endpoint: string): string {
  return `kernel:${endpoint}`;
}

/**
 * The peers to run: the configured ones (their prefixes `config`), then one per gateway of the
 * kernel routes that pass the rules; a route whose gateway is a configured peer's endpoint adds
 * its prefix to that peer. Kernel peers come in order of endpoint, so the set does not depend on
 * the order routes arrived in.
 */
export function livePeers(c: Config, routes: Iterable<KernelRoute>): { peers: LivePeer[]; refused: Refusal[] } {
  const peers: { name: string; endpoint: Address; prefixes: LivePrefix[]; mtu?: number | undefined; encap: 'ipip' | 'fou'; source: PrefixSource }[] = c.peers.map((p) => ({
    name: p.name,
    endpoint: p.endpoint,
    prefixes: p.prefixes.map((x) => ({ ...x, source: 'config' as const })),
    mtu: p.mtu,
    encap: p.encap,
    source: 'config',
  }));
  const byEndpoint = new Map(peers.map((p) => [p.endpoint.value, p]));
  const taken = new Set(c.peers.flatMap((p) => p.prefixes.map((x) => x.text)));
  const refused: Refusal[] = [];
  const learned = new Map<number, LivePrefix[]>();
  for (const r of routes) {
    const why = refuseRoute(c, r, taken);
    const text = `${r.prefix.text} via ${formatIPv4(r.gateway)}`;
    if (why !== null) {
      refused.push({ route: text, reason: why });
      continue;
    }
    taken.add(r.prefix.text);
    const list = learned.get(r.gateway) ?? [];
    list.push({ ...r.prefix, source: 'kernel' });
    learned.set(r.gateway, list);
  }
  const fresh: typeof peers = [];
  for (const [gw, prefixes] of learned) {
    prefixes.sort((a, b) => (a.addr >>> 0) - (b.addr >>> 0) || a.len - b.len);
    const known = byEndpoint.get(gw);
    if (known) known.prefixes.push(...prefixes);
    else {
      const text = formatIPv4(gw);
      fresh.push({ name: kernelName(text), endpoint: { text, value: gw }, prefixes, encap: c.fou.kernel_peers, source: 'kernel' });
    }
  }
  fresh.sort((a, b) => (a.endpoint.value >>> 0) - (b.endpoint.value >>> 0));
  return { peers: [...peers, ...fresh], refused };
}

/** Null if route `r` may become a peer prefix, else why not (the same rules as config.ts crossCheck). */
function refuseRoute(c: Config, r: KernelRoute, taken: ReadonlySet<string>): string | null {
  const gw = formatIPv4(r.gateway);
  const allowed = c.underlay.allowed_endpoints ?? [];
  if (!allowed.some((x) => prefixContains(x.addr, x.len, r.gateway))) return `gateway ${gw} is not inside underlay.allowed_endpoints`;
  if (r.gateway === c.underlay.address.value) return `gateway ${gw} is this host's own underlay.address`;
  if (taken.has(r.prefix.text)) return `prefix ${r.prefix.text} is already a peer's`;
  // RFC 2003 §3.2: routing an underlay address into the tunnel makes the tunnel recurse.
  if (prefixContains(r.prefix.addr, r.prefix.len, c.underlay.address.value)) return `prefix contains this host's underlay address: the tunnel would loop`;
  if (prefixContains(r.prefix.addr, r.prefix.len, r.gateway)) return `prefix contains its own gateway: the tunnel would loop`;
  for (const p of c.peers) if (prefixContains(r.prefix.addr, r.prefix.len, p.endpoint.value)) return `prefix contains peer ${p.name}'s endpoint: the tunnel would loop`;
  for (const a of allowed) if (prefixesOverlap(r.prefix.addr, r.prefix.len, a.addr, a.len)) return `prefix overlaps underlay.allowed_endpoints ${a.text}: the tunnel could loop`;
  if (c.tun.address && prefixesOverlap(r.prefix.addr, r.prefix.len, c.tun.address.addr, 32)) return `prefix contains the TUN's own address`;
  return null;
}

/** Config sections a reload applies; every other leaf that differs needs a restart. */
const LIVE = new Set(['peers', 'icmp.rate', 'icmp.burst', 'log.level', 'encap.ttl', 'encap.tos', 'encap.df', 'underlay.allowed_endpoints']);
// Cross-subnet mode and the own blocks (issue 12): routes added and deleted by a reload.
for (const k of ['encap.mode', 'encap.subnet', 'routes.own_blocks']) LIVE.add(k);

function leaves(o: unknown, at: string, out: Map<string, string>): void {
  if (LIVE.has(at)) return;
  if (o !== null && typeof o === 'object' && !Array.isArray(o) && !('text' in o)) {
    for (const [k, v] of Object.entries(o)) leaves(v, at ? `${at}.${k}` : k, out);
  } else out.set(at, JSON.stringify(o ?? null));
}

/**
 * The keys that differ between `live` and `next` and cannot change while ipipd runs (the TUN, the
 * underlay address and socket, `io.*`, the control socket, how routes are installed...), sorted.
 * With `underlay.send: packet` the peers' endpoints, in order, are fixed too (their next hops are
 * resolved at start, by peer index).
 */
export function restartKeys(live: Config, next: Config, livePeersNow: readonly LivePeer[], nextPeers: readonly LivePeer[]): string[] {
  const a = new Map<string, string>();
  const b = new Map<string, string>();
  leaves(live, '', a);
  leaves(next, '', b);
  const keys = new Set<string>();
  for (const [k, v] of a) if (b.get(k) !== v) keys.add(k);
  for (const k of b.keys()) if (!a.has(k)) keys.add(k);
  // The FOU sockets are opened at start, for the peers then: a FOU peer where there were none needs a restart.
  if (!fouInUse(live) && nextPeers.some((p) => p.encap === 'fou')) keys.add('peers (encap: fou, with no FOU socket open)');
  if (live.underlay.send === 'packet') {
    const ends = (ps: readonly LivePeer[]): string => ps.map((p) => p.endpoint.text).join(',');
    if (ends(livePeersNow) !== ends(nextPeers)) keys.add('peers (endpoints, with underlay.send: packet)');
  }
  return [...keys].sort();
}

/** What a reload changes, in the order it is applied. */
export interface Change {
  added: LivePeer[];
  removed: LivePeer[];
  /** Peers that stay (same name), with what changed about them. */
  changed: { peer: LivePeer; what: string[] }[];
  /** Kernel routes ipipd installs (`routes.install`) to add and delete: prefix texts. */
  routesAdded: string[];
  routesRemoved: string[];
  /** Plain routes (encap.mode: cross-subnet) and blackholes (routes.own_blocks) to add and delete. */
  plainAdded: PlainRoute[];
  plainRemoved: PlainRoute[];
  blackholesAdded: Prefix[];
  blackholesRemoved: Prefix[];
  other: string[];
}

const prefixTexts = (p: LivePeer): string[] => p.prefixes.map((x) => x.text);

/**
 * The kernel routes ipipd installs into the TUN for a peer set: configured prefixes, when
 * `routes.install`, but not those of a peer reached by plain routes (src/daemon/cross-subnet.ts;
 * `kernelLen`: the prefix length of underlay.address on its device).
 */
export function installedPrefixes(c: Config, peers: readonly LivePeer[], kernelLen = 32): string[] {
  if (!c.routes.install) return [];
  return peers.filter((p) => tunnelled(c, p, kernelLen)).flatMap((p) => p.prefixes.filter((x) => x.source === 'config').map((x) => x.text));
}

/** The change from (`live`, `now`) to (`next`, `then`); `kernelLen` as for `installedPrefixes`. */
export function diffPeers(live: Config, now: readonly LivePeer[], next: Config, then: readonly LivePeer[], kernelLen = 32): Change {
  const old = new Map(now.map((p) => [p.name, p]));
  const fresh = new Map(then.map((p) => [p.name, p]));
  const ch: Change = { added: [], removed: [], changed: [], routesAdded: [], routesRemoved: [], plainAdded: [], plainRemoved: [], blackholesAdded: [], blackholesRemoved: [], other: [] };
  for (const p of then) {
    const o = old.get(p.name);
    if (!o) {
      ch.added.push(p);
      continue;
    }
    const what: string[] = [];
    if (o.endpoint.value !== p.endpoint.value) what.push(`endpoint ${o.endpoint.text} -> ${p.endpoint.text}`);
    const before = new Set(prefixTexts(o));
    const after = new Set(prefixTexts(p));
    const plus = [...after].filter((x) => !before.has(x));
    const minus = [...before].filter((x) => !after.has(x));
    if (plus.length || minus.length) what.push(`prefixes ${[...plus.map((x) => `+${x}`), ...minus.map((x) => `-${x}`)].join(' ')}`);
    if (o.mtu !== p.mtu) what.push(`mtu ${o.mtu ?? 'default'} -> ${p.mtu ?? 'default'}`);
    if (o.encap !== p.encap) what.push(`encap ${o.encap} -> ${p.encap}`);
    if (what.length) ch.changed.push({ peer: p, what });
  }
  for (const p of now) if (!fresh.has(p.name)) ch.removed.push(p);
  const r0 = new Set(installedPrefixes(live, now, kernelLen));
  const r1 = new Set(installedPrefixes(next, then, kernelLen));
  ch.routesAdded = [...r1].filter((x) => !r0.has(x));
  ch.routesRemoved = [...r0].filter((x) => !r1.has(x));
  diffUnderlayRoutes(ch, live, now, next, then, kernelLen);
  if (live.icmp.rate !== next.icmp.rate || live.icmp.burst !== next.icmp.burst)
    ch.other.push(`icmp rate ${live.icmp.rate} -> ${next.icmp.rate}/s, burst ${live.icmp.burst} -> ${next.icmp.burst}`);
  if (live.log.level !== next.log.level) ch.other.push(`log level ${live.log.level} -> ${next.log.level}`);
  const e0 = live.encap;
  const e1 = next.encap;
  if (e0.ttl !== e1.ttl || e0.tos !== e1.tos || e0.df !== e1.df) ch.other.push(`encap ttl ${e0.ttl} -> ${e1.ttl}, tos ${e0.tos} -> ${e1.tos}, df ${e0.df} -> ${e1.df}`);
  const a0 = JSON.stringify(live.underlay.allowed_endpoints ?? []);
  const a1 = JSON.stringify(next.underlay.allowed_endpoints ?? []);
  if (a0 !== a1) ch.other.push(`underlay.allowed_endpoints ${(next.underlay.allowed_endpoints ?? []).map((x) => x.text).join(', ') || 'none'}`);
  return ch;
}

/** The plain routes and blackholes of the change (src/daemon/cross-subnet.ts), and the mode line. */
function diffUnderlayRoutes(ch: Change, live: Config, now: readonly LivePeer[], next: Config, then: readonly LivePeer[], kernelLen: number): void {
  const key = (r: PlainRoute): string => `${r.prefix.text} via ${r.via.text}`;
  const p0 = new Map(plainRoutes(live, now, kernelLen).map((r) => [key(r), r]));
  const p1 = new Map(plainRoutes(next, then, kernelLen).map((r) => [key(r), r]));
  ch.plainAdded = [...p1].filter(([k]) => !p0.has(k)).map(([, r]) => r);
  ch.plainRemoved = [...p0].filter(([k]) => !p1.has(k)).map(([, r]) => r);
  const b0 = new Set(live.routes.own_blocks.map((b) => b.text));
  const b1 = new Set(next.routes.own_blocks.map((b) => b.text));
  ch.blackholesAdded = next.routes.own_blocks.filter((b) => !b0.has(b.text));
  ch.blackholesRemoved = live.routes.own_blocks.filter((b) => !b1.has(b.text));
  const s0 = live.encap.subnet?.text ?? 'auto';
  const s1 = next.encap.subnet?.text ?? 'auto';
  if (live.encap.mode !== next.encap.mode || s0 !== s1) ch.other.push(`encap mode ${live.encap.mode} -> ${next.encap.mode}, subnet ${s0} -> ${s1}`);
}

/** Whether applying `ch` would change anything. */
export function isEmpty(ch: Change): boolean {
  const underlay = ch.plainAdded.length + ch.plainRemoved.length + ch.blackholesAdded.length + ch.blackholesRemoved.length;
  return !ch.added.length && !ch.removed.length && !ch.changed.length && !ch.routesAdded.length && !ch.routesRemoved.length && !underlay && !ch.other.length;
}

/**
 * The change as lines: what `ipipd check --diff` prints and `ipipd reload` reports having done.
 * `underlayDev`: the device of plain routes (cross-subnet).
 */
export function describeChange(ch: Change, tun: string, underlayDev = 'the underlay device'): string[] {
  const lines: string[] = [];
  for (const p of ch.added) lines.push(`add peer ${p.name} endpoint ${p.endpoint.text} prefixes ${prefixTexts(p).join(', ')}${p.mtu ? ` mtu ${p.mtu}` : ''}`);
  for (const p of ch.removed) lines.push(`remove peer ${p.name} endpoint ${p.endpoint.text} prefixes ${prefixTexts(p).join(', ')}`);
  for (const { peer, what } of ch.changed) lines.push(`change peer ${peer.name}: ${what.join('; ')}`);
  for (const x of ch.routesAdded) lines.push(`add route ${x} dev ${tun}`);
  for (const x of ch.routesRemoved) lines.push(`delete route ${x} dev ${tun}`);
  for (const r of ch.plainAdded) lines.push(`add route ${plainRouteText(r, underlayDev)} (peer ${r.peer}, same underlay subnet: no IPIP)`);
  for (const r of ch.plainRemoved) lines.push(`delete route ${plainRouteText(r, underlayDev)}`);
  for (const b of ch.blackholesAdded) lines.push(`add route blackhole ${b.text} (routes.own_blocks)`);
  for (const b of ch.blackholesRemoved) lines.push(`delete route blackhole ${b.text}`);
  lines.push(...ch.other);
  return lines.length ? lines : ['no change'];
}

/** Counts for the log line and the status report; routes count every route ipipd installs (TUN, plain, blackhole). */
export function changeCounts(ch: Change): { added: number; removed: number; changed: number; routesAdded: number; routesRemoved: number } {
  const routesAdded = ch.routesAdded.length + ch.plainAdded.length + ch.blackholesAdded.length;
  const routesRemoved = ch.routesRemoved.length + ch.plainRemoved.length + ch.blackholesRemoved.length;
  return { added: ch.added.length, removed: ch.removed.length, changed: ch.changed.length, routesAdded, routesRemoved };
}
