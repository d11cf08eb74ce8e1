/**
 * What the fuzzer reads before and after each face: ipipd's own figures (its control socket)
 * and the kernel's counters around it, each read inside its namespace.
 *
 * Flow: `snapshot` of one host (daemon counters and drops, the IP MIB of /proc/net/snmp, the
 * drops of the protocol-4 raw sockets in /proc/net/raw, device statistics, qdisc drops); `delta`
 * of two snapshots, by name.
 */
import { queryControl } from '../../src/daemon/control.js';
import { must } from '../netns/exec.js';

/** Flat name -> value map; names are "d.<counter>", "drop.<verdict>", "ip.<MIB field>", "raw4.drops", "<dev>.<stat>", "<dev>.qdisc_drops", "ipt.<table>.<chain>". */
export type Figures = Record<string, number>;

/** ipipd's counters and drops (status over the control socket), as "d.*" and "drop.*". */
export async function daemonFigures(socket: string): Promise<Figures> {
  const s = JSON.parse(await queryControl(socket)) as { state: string; counters: Record<string, number>; drops: Record<string, number> };
  const f: Figures = { 'd.up': s.state === 'up' ? 1 : 0 };
  for (const [k, v] of Object.entries(s.counters)) f[`d.${k}`] = v;
  for (const [k, v] of Object.entries(s.drops)) f[`drop.${k}`] = v;
  return f;
}

/** The IP MIB of namespace `ns`: the Ip: lines of /proc/net/snmp and the IpExt: lines of /proc/net/netstat (InTruncatedPkts, InCsumErrors), as "ip.<field>". */
export async function ipMib(ns: string): Promise<Figures> {
  const text = await must(['ip', 'netns', 'exec', ns, 'cat', '/proc/net/snmp', '/proc/net/netstat']);
  const f: Figures = {};
  for (const tag of ['Ip:', 'IpExt:']) {
    const lines = text.split('\n').filter((l) => l.startsWith(tag));
    const names = lines[0]!.split(/\s+/).slice(1);
    const values = lines[1]!.split(/\s+/).slice(1).map(Number);
    names.forEach((n, i) => (f[`ip.${n}`] = values[i]!));
  }
  return f;
}

/** Summed drops of the raw sockets of protocol 4 (the local "port" field is the protocol) in `ns`. */
export async function raw4Drops(ns: string): Promise<Figures> {
  const text = await must(['ip', 'netns', 'exec', ns, 'cat', '/proc/net/raw']);
  let drops = 0;
  for (const line of text.split('\n').slice(1)) {
    const cols = line.trim().split(/\s+/);
    if (cols.length > 12 && cols[1]!.endsWith(':0004')) drops += Number(cols[cols.length - 1]);
  }
  return { 'raw4.drops': drops };
}

/** Packets, drops of device `dev` in `ns` ("<dev>.rx_packets", ...), and its qdisc's drops. */
export async function device(ns: string, dev: string): Promise<Figures> {
  const [link] = JSON.parse(await must(['ip', '-n', ns, '-j', '-s', 'link', 'show', 'dev', dev])) as Array<{ stats64: { rx: Record<string, number>; tx: Record<string, number> } }>;
  const f: Figures = {};
  for (const dir of ['rx', 'tx'] as const) for (const k of ['packets', 'dropped']) f[`${dev}.${dir}_${k}`] = link!.stats64[dir][k] ?? 0;
  const qd = JSON.parse(await must(['tc', '-n', ns, '-s', '-j', 'qdisc', 'show', 'dev', dev])) as Array<{ drops?: number }>;
  f[`${dev}.qdisc_drops`] = qd.reduce((a, q) => a + (q.drops ?? 0), 0);
  return f;
}

/** Packets counted by rule 1 of `chain` in iptables `table` of `ns`, as "ipt.<table>.<chain>". */
export async function iptablesRule(ns: string, table: string, chain: string): Promise<Figures> {
  const text = await must(['ip', 'netns', 'exec', ns, 'iptables', '-t', table, '-L', chain, '-v', '-x', '-n']);
  const first = text.split('\n')[2]?.trim().split(/\s+/)[0];
  return { [`ipt.${table}.${chain}`]: Number(first ?? 0) };
}

/** b - a for every name of b. */
export function delta(a: Figures, b: Figures): Figures {
  const d: Figures = {};
  for (const [k, v] of Object.entries(b)) d[k] = v - (a[k] ?? 0);
  return d;
}
