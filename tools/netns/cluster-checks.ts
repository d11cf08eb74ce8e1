/**
 * What a Cluster (cluster.ts) should look like, what it looks like, and traffic across it.
 *
 * A host's view is two sorted lists of lines. Its kernel table's BIRD routes (`ip -j route show
 * proto bird`): "blackhole <own block>" unless its block is withdrawn, and for every other member
 * that announces, "<block> via <underlay> dev ipip0 onlink" (into ipipd's TUN) or, in
 * cross-subnet mode for a peer on the same underlay subnet, "<block> via <underlay> dev ul0".
 * And ipipd's live table (`ipipd routes`): "<block> -> <underlay>" for each route into the TUN,
 * learned from the kernel. Converged means every member's two lists are what they should be.
 *
 * Flow of this file: expectedView and observedView; differences, waitConverged; podPairs and
 * pingPairs (every ordered pair of pods, in parallel, a few tries each).
 */
import { inNs, run, sleep } from './exec.js';
import type { Cluster } from './cluster.js';
import type { HostInfo, PodInfo } from './topology.js';

export interface RouteView {
  kernel: string[];
  ipipd: string[];
}

/** Whether `h` reaches `peer`'s block by a plain route (cross-subnet mode, same underlay subnet). */
function plain(c: Cluster, h: HostInfo, peer: HostInfo): boolean {
  return c.ipipMode === 'cross-subnet' && h.underlaySubnet === peer.underlaySubnet;
}

export function expectedView(c: Cluster, h: HostInfo): RouteView {
  const kernel: string[] = [];
  const ipipd: string[] = [];
  if (!c.withdrawn.has(h.name)) kernel.push(`blackhole ${h.block}`);
  for (const p of c.members) {
    if (p === h || c.withdrawn.has(p.name)) continue;
    if (plain(c, h, p)) {
      kernel.push(`${p.block} via ${p.underlay} dev ${p.underlayDev}`);
    } else {
      kernel.push(`${p.block} via ${p.underlay} dev ipip0 onlink`);
      ipipd.push(`${p.block} -> ${p.underlay}`);
    }
  }
  return { kernel: kernel.sort(), ipipd: ipipd.sort() };
}

interface IpRoute {
  type?: string;
  dst: string;
  gateway?: string;
  dev?: string;
  flags?: string[];
}

export async function observedView(c: Cluster, h: HostInfo): Promise<RouteView> {
  const r = await run(['ip', '-n', h.ns, '-j', 'route', 'show', 'proto', 'bird']);
  if (r.code !== 0) throw new Error(`ip -n ${h.ns} route: ${r.stderr}`);
  const routes = JSON.parse(r.stdout || '[]') as IpRoute[];
  const kernel = routes.map((x) =>
    x.type === 'blackhole' ? `blackhole ${x.dst}` : `${x.dst} via ${x.gateway} dev ${x.dev}${x.flags?.includes('onlink') ? ' onlink' : ''}`,
  );
  const ipipd = (await c.ipipdRoutes(h)).filter((x) => x.source === 'kernel').map((x) => `${x.prefix} -> ${x.endpoint}`);
  return { kernel: kernel.sort(), ipipd: ipipd.sort() };
}

/** One line per member whose view is not what it should be (empty: converged). */
export async function differences(c: Cluster): Promise<string[]> {
  const out: string[] = [];
  await Promise.all(
    c.members.map(async (h) => {
      const want = expectedView(c, h);
      let got: RouteView;
      try {
        got = await observedView(c, h);
      } catch (e) {
        out.push(`${h.name}: ${e instanceof Error ? e.message : String(e)}`);
        return;
      }
      for (const k of ['kernel', 'ipipd'] as const) {
        const missing = want[k].filter((x) => !got[k].includes(x));
        const extra = got[k].filter((x) => !want[k].includes(x));
        if (missing.length + extra.length > 0) out.push(`${h.name} ${k}: missing [${missing.join('; ')}] extra [${extra.join('; ')}]`);
      }
    }),
  );
  return out.sort();
}

/**
 * Polls (every 50 ms) until every member's kernel table and ipipd agree with expectedView;
 * resolves with the milliseconds since `since`, or rejects with what still differs, at once if
 * an ipipd or a BIRD of the cluster has exited.
 */
export async function waitConverged(c: Cluster, since = Date.now(), timeoutMs = 60_000): Promise<number> {
  for (;;) {
    const dead = c.exited();
    if (dead.length > 0) throw new Error(`${dead.join('; ')}\n${dead.filter((d) => d.startsWith('ipipd')).map((d) => c.ipipdLog(/on (h\d+)/.exec(d)?.[1] ?? '')).join('\n')}`);
    const diff = await differences(c);
    if (diff.length === 0) return Date.now() - since;
    if (Date.now() - since > timeoutMs) throw new Error(`not converged after ${timeoutMs} ms:\n${diff.join('\n')}`);
    await sleep(50);
  }
}

export interface PodPair {
  from: PodInfo;
  to: PodInfo;
  fromHost: string;
  toHost: string;
}

/** Every ordered pair of pods on different hosts among `hosts`. */
export function podPairs(hosts: HostInfo[]): PodPair[] {
  const pairs: PodPair[] = [];
  for (const a of hosts)
    for (const b of hosts)
      if (a !== b) for (const from of a.pods) for (const to of b.pods) pairs.push({ from, to, fromHost: a.name, toHost: b.name });
  return pairs;
}

export interface PingResult {
  pair: PodPair;
  ok: boolean;
  /** Pings sent until one was answered (or all of them). */
  tries: number;
}

/**
 * One ping (1 s wait) per pair, up to `tries` times until answered, `concurrency` pairs at a
 * time. Never rejects: each pair's result says whether it got through.
 */
export async function pingPairs(pairs: PodPair[], tries = 3, concurrency = 12): Promise<PingResult[]> {
  const results: PingResult[] = new Array(pairs.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < pairs.length) {
      const i = next++;
      const pair = pairs[i]!;
      let n = 0;
      let ok = false;
      while (!ok && n < tries) {
        n++;
        ok = (await run(inNs(pair.from.ns, ['ping', '-c', '1', '-W', '1', '-n', '-q', pair.to.address]), { timeoutMs: 5000 })).code === 0;
      }
      results[i] = { pair, ok, tries: n };
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, pairs.length) }, worker));
  return results;
}

/** "h1p1->h3p1, h2p1->h3p1" for the results that are not `ok` (or "none"). */
export function failedPairs(results: PingResult[], ok = true): string {
  const bad = results.filter((r) => r.ok !== ok).map((r) => `${r.pair.from.name}->${r.pair.to.name}`);
  return bad.length === 0 ? 'none' : bad.join(', ');
}
