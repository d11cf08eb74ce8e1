/**
 * ipipd against the real Linux kernel (issue 16, item 3). The host's kernel has no ipip or fou,
 * so the peer is Debian's kernel (linux-image-amd64, 6.1, from Debian's packages: see
 * tools/kernel-peer/) booted once under qemu (TCG) for the whole file and reconfigured between
 * the encapsulations. The topology is scripts/netns-setup.sh's two hosts; the guest takes h2's
 * place on the underlay (h2's namespace is only a bridge to qemu's TAP) and h2's block:
 *
 *   P-h1p1 pod A        P-h1 (ipipd, h1.yaml)                  P-h2                 qemu: Debian's kernel
 *   198.51.100.10 --- p1 [ipip0 198.51.100.0/32] ul0 192.0.2.1 ==== ul0 -[kb0]- TAP ==== eth0 192.0.2.2
 *                                                                                        <tunnel> 203.0.113.1/32
 *                                                                                        198.51.100.0/25 dev <tunnel>
 *
 * What is checked, for plain IPIP (the kernel's `ipip` device): ping both ways, a 4 MiB TCP
 * transfer each way with its SHA-256 checked at both ends, and inner packets from the kernel
 * with a source outside h2's prefixes dropped by ipipd under `spoofed_source` and not delivered;
 * after SIGTERM ipipd left nothing behind. The guest's commands are the README's ("Linux kernel
 * peer"), character for character.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { expectedSha256 } from '../fixtures/payload.js';
import { ROOT, editedConfig, startDaemon, status, stopDaemon, type RunningDaemon } from '../helpers/daemons.js';
import { expectNothingLeft } from '../helpers/pair.js';
import { integrationSkip } from '../helpers/skip.js';
import { hasCommand } from '../../tools/netns/exec.js';
import { netnsMissing } from '../../tools/netns/namespaces.js';
import { Topology, type HostInfo, type PodInfo } from '../../tools/netns/topology.js';
import { KernelPeer } from '../../tools/kernel-peer/guest.js';
import { kernelPeerAssets } from '../../tools/kernel-peer/packages.js';

/** Whether the kernel and busybox can be had (fetched into the cache now, reused later), or why not. */
function peerMissing(): { reason: string | null; assets: ReturnType<typeof kernelPeerAssets> | null } {
  if (netnsMissing() !== null) return { reason: null, assets: null }; // integrationSkip says why
  const missing = ['qemu-system-x86_64', 'tcpdump'].filter((c) => !hasCommand(c));
  if (missing.length > 0) return { reason: `${missing.map((c) => `'${c}'`).join(', ')} not installed (scripts/install-deps.sh test)`, assets: null };
  const assets = kernelPeerAssets();
  return { reason: typeof assets === 'string' ? assets : null, assets };
}

const probe = peerMissing();
const why = integrationSkip('kernel interop tests', probe.reason);

/** The guest's underlay address (h2's in h1.yaml) and its inner address, in h2's block. */
const GUEST_UNDERLAY = '192.0.2.2';
const GUEST_INNER = '203.0.113.1';
/** An address in the guest's /24 but outside h2's 203.0.113.0/25: not the peer's to send from. */
const SPOOFED = '203.0.113.200';

/** README "Linux kernel peer": the kernel side of a plain IPIP tunnel to ipipd at 192.0.2.1. */
const KERNEL_IPIP = `ip link add ipip1 type ipip remote 192.0.2.1 local 192.0.2.2
ip link set ipip1 up
ip addr add 203.0.113.1/32 dev ipip1
ip route add 198.51.100.0/25 dev ipip1 src 203.0.113.1`;

/** README "Linux kernel peer": the same over FOU (UDP port 5555 both ways). */
const KERNEL_FOU = `ip fou add port 5555 ipproto 4
ip link add fou1 type ipip remote 192.0.2.1 local 192.0.2.2 encap fou encap-sport auto encap-dport 5555
ip link set fou1 up
ip addr add 203.0.113.1/32 dev fou1
ip route add 198.51.100.0/25 dev fou1 src 203.0.113.1`;

interface Mode {
  encap: 'ipip' | 'fou';
  title: string;
  /** The guest's tunnel device, and the commands that make it. */
  dev: string;
  setup: string;
  teardown: string;
  /** What every outer packet between 192.0.2.1 and 192.0.2.2 looks like to tcpdump -n, each way. */
  wire: RegExp;
}

const MODES: Mode[] = [
  {
    encap: 'ipip',
    title: 'plain IPIP (protocol 4)',
    dev: 'ipip1',
    setup: KERNEL_IPIP,
    teardown: 'ip link del ipip1',
    wire: /^IP 192\.0\.2\.[12] > 192\.0\.2\.[12]: IP (198\.51\.100\.10|203\.0\.113\.1) > (198\.51\.100\.10|203\.0\.113\.1): ICMP echo (request|reply)/,
  },
  {
    encap: 'fou',
    title: 'FOU (IPIP in UDP, port 5555)',
    dev: 'fou1',
    setup: KERNEL_FOU,
    teardown: 'ip link del fou1 && ip fou del port 5555',
    wire: /^IP 192\.0\.2\.[12]\.\d+ > 192\.0\.2\.[12]\.5555: UDP, length 84$/,
  },
];

const MiB = 1 << 20;

describe.skipIf(why)('ipipd and the Linux kernel as peers', () => {
  let topo: Topology;
  let h1: HostInfo;
  let podA: PodInfo;
  let peer: KernelPeer;

  beforeAll(async () => {
    const assets = probe.assets;
    if (assets === null || typeof assets === 'string') throw new Error('unreachable: the file is skipped without assets');
    topo = await Topology.up({ hosts: 2 });
    h1 = topo.host(1);
    podA = h1.pods[0]!;
    const h2 = topo.host(2);
    const tap = `kt${topo.prefix}`;
    // h2 gives up its underlay address to the guest: its ul0 and qemu's TAP on one bridge.
    for (const cmd of [
      `ip addr flush dev ul0`,
      `ip link add kb0 type bridge`,
      `ip tuntap add dev ${tap} mode tap`,
      `ip link set ul0 master kb0`,
      `ip link set ${tap} master kb0`,
      `ip link set kb0 up`,
      `ip link set ${tap} up`,
    ]) {
      const r = await topo.exec(h2.ns, cmd.split(' '));
      if (r.code !== 0) throw new Error(`${cmd} in ${h2.ns}: ${r.stderr}`);
    }
    peer = await KernelPeer.boot({ ns: h2.ns, tap, assets, workDir: topo.info.outDir });
    console.log(`kernel peer: ${assets.kernelPackage} ${assets.version} (uname -r ${peer.release}) up in ${peer.bootMs} ms`);
    // The e1000 reports carrier a second or two after "up": traffic sent before that waits.
    await peer.must(`ip addr add ${GUEST_UNDERLAY}/24 dev eth0 && ip link set eth0 up
for i in $(seq 100); do [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" = 1 ] && exit 0; usleep 100000; done; exit 1`);
  });

  afterAll(async () => {
    await peer?.stop();
    await topo?.down();
  });

  test('the README holds the kernel-side commands this file runs, and no other kernel tunnel commands', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    expect(readme).toContain(KERNEL_IPIP);
    expect(readme).toContain(KERNEL_FOU);
    // Every shell block that makes a kernel ipip device is one this file runs, so none is untried.
    const blocks = [...readme.matchAll(/```sh\n([\s\S]*?)\n```/g)].map((m) => m[1]!).filter((b) => / type ipip /.test(b));
    for (const b of blocks) expect([KERNEL_IPIP, KERNEL_FOU], 'a README block of kernel tunnel commands').toContain(b);
  });

  // One daemon per encapsulation, the same guest: its tunnel device is remade between them.
  for (const mode of MODES) describe(mode.title, () => {
    let d1: RunningDaemon;

    beforeAll(async () => {
      await peer.must(mode.setup);
      // Plain IPIP is the default: h1.yaml as generated; FOU is one key on the peer.
      d1 = await startDaemon(topo, h1, mode.encap === 'ipip' ? h1.config : editedConfig(topo, h1, 'fou', (c) => (c.peers[0].encap = 'fou')));
    });

    afterAll(async () => {
      if (d1 !== undefined) {
        expect(await stopDaemon(d1)).toBe(0);
        await expectNothingLeft(topo, h1);
      }
      await peer.must(mode.teardown);
    });

    test('ping from pod A to the kernel and back, encapsulated as configured on the wire', async () => {
      const wire = await capture(topo, topo.host(2).ns, () => pingBothWays(topo, podA, peer));
      expect(wire.length, wire.join('\n')).toBeGreaterThanOrEqual(12);
      for (const line of wire) expect(line).toMatch(mode.wire);
      const s = await status(h1);
      expect(s.peers[0]!.txPackets).toBeGreaterThanOrEqual(6);
      expect(s.peers[0]!.rxPackets).toBeGreaterThanOrEqual(6);
    });

    test('4 MiB over TCP from pod A to the kernel, SHA-256 checked', async () => {
      await tcpToGuest(topo, podA, peer, 4 * MiB, 16);
    });

    test('4 MiB over TCP from the kernel to pod A, SHA-256 checked', async () => {
      await tcpFromGuest(topo, podA, peer, 4 * MiB);
    });

    test('inner sources outside the peer prefixes from the kernel are dropped as spoofed_source', async () => {
      await spoofedFromGuest(h1, podA, peer, mode.dev);
    });
  });
});

/**
 * The outer packets between 192.0.2.1 and 192.0.2.2 (protocol 4, or UDP to or from port 5555)
 * that cross h2's bridge while `during` runs, as tcpdump -n prints them (one line each).
 */
async function capture(topo: Topology, ns: string, during: () => Promise<void>): Promise<string[]> {
  const filter = 'host 192.0.2.1 and host 192.0.2.2 and (ip proto 4 or udp port 5555)';
  const dump = topo.spawn(ns, ['tcpdump', '-nl', '-i', 'kb0', '-t', filter]);
  let out = '';
  let err = '';
  dump.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  dump.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<void>((r) => dump.on('close', () => r()));
  for (let i = 0; i < 100 && !/listening on/.test(err); i++) await new Promise((r) => setTimeout(r, 50));
  try {
    await during();
  } finally {
    await new Promise((r) => setTimeout(r, 300)); // the last reply reaches tcpdump's buffer
    dump.kill('SIGINT');
    await exited;
  }
  return out.split('\n').filter(Boolean);
}

/** Three echoes from pod `a` to the guest's inner address and three from the guest to `a`. */
async function pingBothWays(topo: Topology, a: PodInfo, peer: KernelPeer): Promise<void> {
  const out = await topo.exec(a.ns, ['ping', '-c', '3', '-i', '0.2', '-W', '5', GUEST_INNER], { timeoutMs: 30_000 });
  expect(out.stdout, `ping ${a.name} -> kernel`).toMatch(/3 packets transmitted, 3 received/);
  const back = await peer.run(`ping -c 3 -i 0.2 -W 5 ${a.address}`);
  expect(back.output, `ping kernel -> ${a.name}`).toMatch(/3 packets transmitted, 3 packets received/);
}

/**
 * `bytes` from pod `from` (traffic.js tcp-send, payload `seed`) to a busybox `nc -l` in the
 * guest that hands the connection to `sha256sum` (`-e`: a pipe would give nc a stdin, whose
 * end makes it stop reading): both ends' hashes must be the payload's.
 */
async function tcpToGuest(topo: Topology, from: PodInfo, peer: KernelPeer, bytes: number, seed: number): Promise<void> {
  await peer.must(`rm -f /tmp/rx /tmp/rx.part
nc -l -p 5001 -e sh -c 'sha256sum > /tmp/rx.part && mv /tmp/rx.part /tmp/rx' > /dev/null 2>&1 &
for i in $(seq 100); do netstat -ltn | grep -q ':5001 ' && exit 0; usleep 50000; done; exit 1`);
  const send = await topo.traffic(from.ns, ['tcp-send', '--to', GUEST_INNER, '--port', '5001', '--bytes', String(bytes), '--seed', String(seed), '--timeout', '90'], { timeoutMs: 100_000 });
  expect(send.code, send.stderr).toBe(0);
  expect(send.json).toMatchObject({ bytes, sha256: expectedSha256(bytes, seed) });
  const got = await peer.must('for i in $(seq 200); do [ -f /tmp/rx ] && break; usleep 100000; done; cat /tmp/rx');
  expect(got.split(/\s+/)[0]).toBe(expectedSha256(bytes, seed));
}

/**
 * `bytes` of the guest's /dev/urandom, hashed there, sent with busybox `nc` to a traffic.js
 * tcp-sink in pod `to`: the sink's hash must be the guest's.
 */
async function tcpFromGuest(topo: Topology, to: PodInfo, peer: KernelPeer, bytes: number): Promise<void> {
  const sink = await topo.serve(to.ns, ['tcp-sink', '--bind', to.address, '--port', '0', '--timeout', '90']);
  const sent = await peer.must(`dd if=/dev/urandom of=/tmp/tx bs=65536 count=${bytes / 65536} 2>/dev/null && sha256sum /tmp/tx && nc ${to.address} ${sink.port} < /tmp/tx`, 100_000);
  const got = await sink.result;
  expect(got.code, got.stderr).toBe(0);
  const sha = sent.split(/\s+/)[0];
  expect(sha).toMatch(/^[0-9a-f]{64}$/);
  expect(got.json).toMatchObject({ bytes, sha256: sha });
}

/**
 * The guest pings pod A from an address outside h2's prefixes (put on `dev` for the purpose):
 * no echo may come back, and h1's ipipd must count each as spoofed_source. A ping from the
 * guest's own address afterwards still goes through.
 */
async function spoofedFromGuest(h1: HostInfo, a: PodInfo, peer: KernelPeer, dev: string): Promise<void> {
  await peer.must(`ip addr add ${SPOOFED}/32 dev ${dev}`);
  const before = await status(h1);
  const r = await peer.run(`ping -c 3 -i 0.2 -W 1 -I ${SPOOFED} ${a.address}`);
  expect(r.output).toMatch(/3 packets transmitted, 0 packets received/);
  const after = await status(h1);
  const grown = Object.fromEntries(Object.entries(after.drops).filter(([k, v]) => v !== before.drops[k]).map(([k, v]) => [k, v - before.drops[k]!]));
  expect(grown).toEqual({ spoofed_source: 3 });
  expect(after.peers[0]!.rxPackets).toBe(before.peers[0]!.rxPackets);
  await peer.must(`ip addr del ${SPOOFED}/32 dev ${dev}`);
  const ok = await peer.run(`ping -c 1 -W 5 ${a.address}`);
  expect(ok.output).toMatch(/1 packets transmitted, 1 packets received/);
}
