/**
 * What the integration tests of two hosts with a daemon each share (tunnel, queues, offload,
 * underlay-gro): starting the pair with the underlay's packet counts taken around the start,
 * the checks on a freshly started daemon, traffic between pods (echoes both ways, a TCP transfer
 * checked by SHA-256 on both ends), and the check that a stopped daemon left nothing behind;
 * and the two hosts behind a router that the path-MTU and ICMP tests use (`routerPair`), or
 * directly connected with a daemon each, as the RFC 2003 direct tests use them (`directPair`).
 *
 *   const topo = await Topology.up({ hosts: 2 });
 *   ({ h1, h2, d1, d2 } = started = await startPair(topo, (h) => h.config));
 *   expectFreshPair(started, (s) => expect(s.peers[0]!.txPackets).toBe(0));
 *   await pingBothWays(topo, h1.pods[0]!, h2.pods[0]!);
 *   await tcpTransfer(topo, h1.pods[0]!, h2.pods[0]!, 4 << 20, 1);
 *   expect(await stopDaemon(d1)).toBe(0);
 *   await expectNothingLeft(topo, h1);
 */
import { existsSync } from 'node:fs';
import { expect } from 'vitest';
import type { StatusReport } from '../../src/daemon/daemon.js';
import { expectedSha256 } from '../fixtures/payload.js';
import { startDaemon, status, type RunningDaemon } from './daemons.js';
import { hasCommand } from '../../tools/netns/exec.js';
import { Topology, type HostInfo, type PodInfo } from '../../tools/netns/topology.js';

/** Whether `cmd` is on the PATH. */
export const have = hasCommand;

export interface LinkPackets {
  tx: number;
  rx: number;
}

/** Packets through `dev` in namespace `ns` so far, from the kernel's link statistics. */
export async function linkPackets(topo: Topology, ns: string, dev: string): Promise<LinkPackets> {
  const r = await topo.exec(ns, ['ip', '-s', '-j', 'link', 'show', 'dev', dev]);
  if (r.code !== 0) throw new Error(`ip -s link show ${dev} in ${ns}: ${r.stderr}`);
  const s = JSON.parse(r.stdout)[0].stats64;
  return { tx: s.tx.packets, rx: s.rx.packets };
}

export interface StartedPair {
  h1: HostInfo;
  h2: HostInfo;
  d1: RunningDaemon;
  d2: RunningDaemon;
  /** Both hosts' underlay packet counts just before the daemons start and just after both are up. */
  underlayBefore: LinkPackets[];
  underlayAfter: LinkPackets[];
  /** h1's and h2's first status reports. */
  fresh: StatusReport[];
}

/**
 * Start ipipd on hosts 1 and 2 of `topo`, each with the config `config(host)` names, and take
 * what the test that starting sends and counts nothing needs.
 */
export async function startPair(topo: Topology, config: (h: HostInfo) => string): Promise<StartedPair> {
  const h1 = topo.host(1);
  const h2 = topo.host(2);
  const hosts = [h1, h2];
  const underlayBefore = await Promise.all(hosts.map((h) => linkPackets(topo, h.ns, h.underlayDev)));
  const d1 = await startDaemon(topo, h1, config(h1));
  const d2 = await startDaemon(topo, h2, config(h2));
  const underlayAfter = await Promise.all(hosts.map((h) => linkPackets(topo, h.ns, h.underlayDev)));
  const fresh = await Promise.all(hosts.map((h) => status(h)));
  return { h1, h2, d1, d2, underlayBefore, underlayAfter, fresh };
}

/**
 * A freshly started pair: starting it put nothing on the underlay (both hosts' packet counts as
 * before), and each daemon's first status is up with every counter and drop (of which there are
 * some) zero, no error and one peer; `more` checks each of those statuses further.
 */
export function expectFreshPair(p: StartedPair, more: (s: StatusReport) => void): void {
  expect(p.underlayAfter).toEqual(p.underlayBefore);
  for (const s of p.fresh) {
    expectFreshStatus(s);
    more(s);
  }
}

function expectFreshStatus(s: StatusReport): void {
  expect(s.state).toBe('up');
  const nonZero = (o: Record<string, number>): Record<string, number> => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== 0));
  expect(Object.keys(s.counters).length).toBeGreaterThan(0);
  expect(Object.keys(s.drops).length).toBeGreaterThan(0);
  expect(nonZero(s.counters)).toEqual({});
  expect(nonZero(s.drops)).toEqual({});
  expect(s.lastErrors).toEqual({});
  expect(s.peers).toHaveLength(1);
}

/**
 * Three echoes from pod `a` to pod `b` and three from `b` to `a`: ICMP with ping where it is
 * installed, else traffic.js udp-ping against a udp-echo on port 7.
 */
export async function pingBothWays(topo: Topology, a: PodInfo, b: PodInfo): Promise<void> {
  for (const [from, to] of [[a, b], [b, a]] as const) {
    if (have('ping')) {
      const r = await topo.exec(from.ns, ['ping', '-c', '3', '-i', '0.2', '-W', '2', to.address], { timeoutMs: 15_000 });
      expect(r.stdout, `ping ${from.name} -> ${to.name}`).toMatch(/3 packets transmitted, 3 received/);
    } else {
      const echo = await topo.serve(to.ns, ['udp-echo', '--bind', to.address, '--port', '7']);
      const r = await topo.traffic(from.ns, ['udp-ping', '--to', to.address, '--port', '7', '--count', '3']);
      await echo.stop();
      expect(r.json, `udp-ping ${from.name} -> ${to.name}`).toMatchObject({ sent: 3, received: 3 });
    }
  }
}

/**
 * Send `bytes` from pod `from` to pod `to` over TCP (traffic.js tcp-send / tcp-sink, each given
 * `timeoutS` seconds) and check the SHA-256 on both ends.
 */
export async function tcpTransfer(topo: Topology, from: PodInfo, to: PodInfo, bytes: number, seed: number, timeoutS = 90): Promise<void> {
  const sink = await topo.serve(to.ns, ['tcp-sink', '--bind', to.address, '--port', '0', '--timeout', String(timeoutS)]);
  const send = await topo.traffic(from.ns, ['tcp-send', '--to', to.address, '--port', String(sink.port), '--bytes', String(bytes), '--seed', String(seed), '--timeout', String(timeoutS)], { timeoutMs: (timeoutS + 10) * 1000 });
  const got = await sink.result;
  expect(send.code, send.stderr).toBe(0);
  expect(got.code, got.stderr).toBe(0);
  expect(got.json).toMatchObject({ bytes, sha256: expectedSha256(bytes, seed) });
  expect(send.json).toMatchObject({ bytes, sha256: expectedSha256(bytes, seed) });
}

/** After its daemon stopped: no ipip0, no TUN address, no route to ipip0 or another host's block, no control socket on `h`. */
export async function expectNothingLeft(topo: Topology, h: HostInfo): Promise<void> {
  const link = await topo.exec(h.ns, ['ip', 'link', 'show', 'ipip0']);
  expect(link.code, `${h.name}: ipip0 is still there`).not.toBe(0);
  const addrs = await topo.exec(h.ns, ['ip', '-o', 'addr']);
  expect(addrs.stdout, `${h.name}: addresses`).not.toContain(h.tunAddress);
  const routes = await topo.exec(h.ns, ['ip', 'route', 'show', 'table', 'all']);
  expect(routes.stdout, `${h.name}: routes`).not.toMatch(/ipip0/);
  for (const other of topo.info.hosts.filter((x) => x !== h)) expect(routes.stdout, `${h.name}: routes`).not.toContain(other.block);
  expect(existsSync(h.socket), `${h.name}: ${h.socket} is still there`).toBe(false);
}

/** Two hosts behind a router (netns-setup.sh --underlay router), one pod each, no daemon yet. */
export interface RouterPair {
  topo: Topology;
  h1: HostInfo;
  h2: HostInfo;
  /** Pod A (on h1) and pod B (on h2). */
  A: PodInfo;
  B: PodInfo;
  /** The router's namespace. */
  R: string;
}

export async function routerPair(): Promise<RouterPair> {
  const topo = await Topology.up({ hosts: 2, underlay: 'router' });
  const h1 = topo.host(1);
  const h2 = topo.host(2);
  return { topo, h1, h2, A: h1.pods[0]!, B: h2.pods[0]!, R: topo.info.router!.ns };
}

/** Two directly connected hosts (netns-setup.sh's default), one pod each, ipipd started on both. */
export interface DirectPair {
  topo: Topology;
  h1: HostInfo;
  h2: HostInfo;
  /** Pod A (on h1) and pod B (on h2). */
  A: PodInfo;
  B: PodInfo;
  /** h1's daemon (h2's runs until the topology goes down). */
  d1: RunningDaemon;
}

export async function directPair(): Promise<DirectPair> {
  const topo = await Topology.up({ hosts: 2 });
  const h1 = topo.host(1);
  const h2 = topo.host(2);
  const d1 = await startDaemon(topo, h1);
  await startDaemon(topo, h2);
  return { topo, h1, h2, A: h1.pods[0]!, B: h2.pods[0]!, d1 };
}
