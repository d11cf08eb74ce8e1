/**
 * The fuzzer's account of one face from the counter deltas (tools/fuzz/counters.ts), its checks,
 * and the one table of every face.
 *
 *   injected + valid alongside = forwarded + ipipd's drops by reason + the kernel's drops
 *
 * TUN face (h1 reads ipip0): valid = what h1's stack routed into ipip0 (an iptables counter in
 * mangle POSTROUTING: the transfer's segments and pod A's answers); forwarded = encapsulated packets sent (tx_packets, less the
 * fragments of the packets it fragmented, plus those packets); kernel = ipip0's tx_dropped and
 * qdisc drops, pod A's veth tx_dropped.
 * Underlay faces (h1 reads its raw socket): valid = h2 ipipd's tx_packets (all to h1);
 * forwarded = decapsulated packets written to the TUN (rx_packets); kernel = h1's IP InHdrErrors
 * (bad version, IHL, checksum, options), InTruncatedPkts (Total Length beyond the frame),
 * InDiscards, fragments held for reassembly (ReasmReqds - ReasmOKs), the raw socket's drops, and
 * h2's ul0 tx_dropped (the veth's own drops on the way).
 */
import type { Figures } from './counters.js';

export interface Account {
  face: string;
  injected: number;
  sendFailures: number;
  valid: number;
  read: number;
  forwarded: number;
  drops: Record<string, number>;
  kernel: Record<string, number>;
  unaccounted: number;
  transferOk: boolean;
  seconds: number;
  cases: Record<string, number>;
  failures: string[];
}

function sumOf(r: Record<string, number>): number {
  return Object.values(r).reduce((a, b) => a + b, 0);
}

export function account(face: string, inj: { injected: number; sendFailures: number; cases: Record<string, number> }, d: Figures, transferOk: boolean, seconds: number): Account {
  const drops: Record<string, number> = {};
  for (const [k, v] of Object.entries(d)) if (k.startsWith('h1.drop.') && v !== 0) drops[k.slice('h1.drop.'.length)] = v;
  const g = (k: string): number => d[k] ?? 0;
  let valid: number;
  let read: number;
  let forwarded: number;
  let kernel: Record<string, number>;
  if (face === 'tun') {
    valid = g('h1.ipt.mangle.POSTROUTING');
    read = g('h1.d.tun_rx_packets');
    forwarded = g('h1.d.tx_packets') - g('h1.d.fragments_sent') + g('h1.d.fragmented_packets');
    kernel = { tun_tx_dropped: g('h1.ipip0.tx_dropped'), tun_qdisc_drops: g('h1.ipip0.qdisc_drops'), pod_veth_tx_dropped: g('podA.eth0.tx_dropped') };
  } else {
    valid = g('h2.d.tx_packets');
    read = g('h1.d.underlay_rx_packets');
    forwarded = g('h1.d.rx_packets');
    kernel = {
      ip_header_errors: g('h1.ip.InHdrErrors'),
      ip_truncated: g('h1.ip.InTruncatedPkts'),
      ip_discards: g('h1.ip.InDiscards'),
      reassembly_held: g('h1.ip.ReasmReqds') - g('h1.ip.ReasmOKs'),
      raw_socket_drops: g('h1.raw4.drops'),
      veth_tx_dropped: g('h2.ul0.tx_dropped'),
    };
  }
  const unaccounted = inj.injected + valid - forwarded - sumOf(drops) - sumOf(kernel);
  const failures: string[] = [];
  if (unaccounted !== 0) failures.push(`${face}: ${unaccounted} packets unaccounted for`);
  if (!transferOk) failures.push(`${face}: the TCP transfer alongside did not arrive intact (SHA-256)`);
  if (face !== 'tun' && g('h1.d.underlay_gro_packets') !== 0) failures.push(`${face}: underlay GRO merged packets: the account counts datagrams, not segments`);
  return { face, injected: inj.injected, sendFailures: inj.sendFailures, valid, read, forwarded, drops, kernel, unaccounted, transferOk, seconds, cases: inj.cases, failures };
}

/** One table: a column per face, a row per quantity (drop reasons and kernel counters that moved). */
export function printTable(rows: Account[], out: (s: string) => void): void {
  if (rows.length === 0) return;
  const lines: Array<[string, Array<string | number>]> = [];
  const row = (name: string, f: (a: Account) => string | number): void => void lines.push([name, rows.map(f)]);
  row('injected', (a) => a.injected);
  row('valid traffic alongside', (a) => a.valid);
  row('read by ipipd', (a) => a.read);
  row('forwarded', (a) => a.forwarded);
  const reasons = [...new Set(rows.flatMap((a) => Object.keys(a.drops)))].sort();
  for (const r of reasons) row(`drop: ${r}`, (a) => a.drops[r] ?? 0);
  const kernel = [...new Set(rows.flatMap((a) => Object.keys(a.kernel)))];
  for (const k of kernel) row(`kernel: ${k}`, (a) => (k in a.kernel ? a.kernel[k]! : '-'));
  row('unaccounted (must be 0)', (a) => a.unaccounted);
  row('transfer SHA-256', (a) => (a.transferOk ? 'ok' : 'BAD'));
  row('seconds', (a) => a.seconds.toFixed(1));
  const w0 = Math.max(...lines.map(([n]) => n.length));
  const w = rows.map((a, i) => Math.max(a.face.length, ...lines.map(([, v]) => String(v[i]).length)));
  out(`${''.padEnd(w0)}  ${rows.map((a, i) => a.face.padStart(w[i]!)).join('  ')}\n`);
  for (const [n, v] of lines) out(`${n.padEnd(w0)}  ${v.map((x, i) => String(x).padStart(w[i]!)).join('  ')}\n`);
}
