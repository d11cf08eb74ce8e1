/**
 * Packet-level faults (issue 14), between two daemons (topology as in faults.test.ts):
 *
 *   P-h1p1 pod A --- [ipip0] h1 ul0 192.0.2.1 ==== 192.0.2.2 ul0 h2 [ipip0] --- pod B P-h2p1
 *
 * - Valid IPIP whose outer header carries Record Route or Timestamp (RFC 791 §3.1): the kernel
 *   at h1 fills the option in on local delivery without recomputing the header checksum; a
 *   probe (test/fixtures/raw-ipip-probe.py, a raw protocol-4 socket beside ipipd's) records what
 *   a raw socket is handed, and ipipd must forward every such packet (not `bad_checksum`).
 * - A full TUN queue: with ipipd stopped (SIGSTOP) and `tun.txqueuelen: 8`, pings into the TUN
 *   overflow it; what the kernel dropped shows in status as `tun_kernel_tx_dropped`, equal to
 *   the device's own `tx_dropped`.
 * - Missing capabilities: without CAP_NET_RAW (or CAP_NET_ADMIN) the error says which one is
 *   missing, and nothing is left behind.
 */
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, test } from 'vitest';
import { ROOT, editedConfig, startDaemon, status, stopDaemon, type RunningDaemon } from '../helpers/daemons.js';
import { expectNothingLeft } from '../helpers/pair.js';
import { spawnDaemon, untilTraffic, within } from '../helpers/faults.js';
import { PYTHON, craft, ip, packetToolsMissing, raw, udp, type Layer } from '../helpers/scapy.js';
import { integrationSkip, skipWithout } from '../helpers/skip.js';
import { sleep } from '../../tools/netns/exec.js';
import { Topology, type HostInfo } from '../../tools/netns/topology.js';

const why = integrationSkip('packet fault tests', packetToolsMissing() ?? skipWithout('ping', 'capsh'));
const PROBE = join(ROOT, 'test', 'fixtures', 'raw-ipip-probe.py');

/** The option bytes as a raw layer right after an outer header of IHL 5 + len/4 (scapy keeps them as given). */
const optionBytes = (hex: string): Layer => ({ raw: { text: String.fromCharCode(...Buffer.from(hex.replace(/ /g, ''), 'hex')) } });
/** Record Route, one empty slot (type 7, length 7, pointer 4), End of Option List. */
const RECORD_ROUTE = '07 07 04 00 00 00 00 00';
/** Internet Timestamp, timestamps only, two empty slots (type 68, length 12, pointer 5, flags 0). */
const TIMESTAMP = '44 0c 05 00 00 00 00 00 00 00 00 00';

describe.skipIf(why)('packet faults', () => {
  let topo: Topology;
  let h1: HostInfo;
  let h2: HostInfo;
  const running = new Set<RunningDaemon>();

  beforeAll(async () => {
    topo = await Topology.up({ hosts: 2 });
    h1 = topo.host(1);
    h2 = topo.host(2);
  });

  afterEach(async () => {
    for (const d of running) {
      d.child.kill('SIGCONT');
      d.child.kill('SIGKILL');
      await d.exited;
    }
    running.clear();
  });

  afterAll(async () => {
    await topo?.down();
  });

  test('valid IPIP with an outer Record Route or Timestamp option is forwarded, not bad_checksum', async () => {
    const d1 = await startDaemon(topo, h1);
    const d2 = await startDaemon(topo, h2);
    running.add(d1).add(d2);
    const a = h1.pods[0]!;
    const b = h2.pods[0]!;
    const before = await status(h1);
    const probe = topo.spawn(h1.ns, [PYTHON, PROBE, '10']);
    let out = '';
    probe.stdout!.on('data', (d: Buffer) => (out += d.toString()));
    probe.stderr!.on('data', (d: Buffer) => (out += d.toString()));
    const probeDone = new Promise((r) => probe.on('exit', r));
    for (let i = 0; i < 100 && !out.includes('ready'); i++) await sleep(50);
    const outer = (opts: string): Layer => ip({ src: h2.underlay, dst: h1.underlay, proto: 4, ihl: 5 + opts.replace(/ /g, '').length / 8 });
    const inner = [ip({ src: b.address, dst: a.address, ttl: 64 }), udp(40000, 9), raw(32)];
    await craft(topo, h2.ns, [
      { layers: [outer(RECORD_ROUTE), optionBytes(RECORD_ROUTE), ...inner], count: 5 },
      { layers: [outer(TIMESTAMP), optionBytes(TIMESTAMP), ...inner], count: 5 },
    ]);
    await within(probeDone, 15_000, 'the raw-socket probe');
    const seen = JSON.parse(out.trim().split('\n').pop()!) as { ihl: number; checksum_ok: boolean; options: string }[];
    // Measured: what the kernel hands a raw socket. It filled in our address (Record Route,
    // pointer 4 -> 8) and a timestamp (pointer 5 -> 9), and left the checksum as it was.
    expect(seen).toHaveLength(10);
    const rr = seen.filter((x) => x.ihl === 28);
    const ts = seen.filter((x) => x.ihl === 32);
    expect(rr.map((x) => x.options)).toEqual(Array(5).fill(`070708${Buffer.from(h1.underlay.split('.').map(Number)).toString('hex')}00`));
    for (const x of ts) expect(x.options.slice(0, 8)).toBe('440c0900');
    expect(seen.every((x) => !x.checksum_ok), 'the kernel left the outer checksum stale').toBe(true);
    // And ipipd forwarded all ten.
    let after = await status(h1);
    for (let i = 0; i < 50 && after.peers[0]!.rxPackets - before.peers[0]!.rxPackets < 10; i++) {
      await sleep(50);
      after = await status(h1);
    }
    expect(after.drops.bad_checksum - before.drops.bad_checksum).toBe(0);
    expect(after.peers[0]!.rxPackets - before.peers[0]!.rxPackets).toBe(10);
    for (const d of [d1, d2]) {
      running.delete(d);
      expect(await stopDaemon(d)).toBe(0);
    }
    await expectNothingLeft(topo, h1);
  });

  test('a full TUN queue: what the kernel dropped is counted as tun_kernel_tx_dropped', async () => {
    const cfg = editedConfig(topo, h1, 'txq8', (c) => (c.tun = { ...c.tun, txqueuelen: 8 }));
    const d1 = await startDaemon(topo, h1, cfg);
    const d2 = await startDaemon(topo, h2);
    running.add(d1).add(d2);
    const a = h1.pods[0]!;
    const b = h2.pods[0]!;
    await untilTraffic(topo, a, b, Date.now());
    expect((await status(h1)).counters.tun_kernel_tx_dropped).toBe(0);
    // ipipd stopped: nothing reads the TUN, its queue of 8 fills, the kernel drops the rest.
    d1.child.kill('SIGSTOP');
    await topo.exec(a.ns, ['ping', '-n', '-c', '40', '-i', '0.01', '-W', '1', b.address], { timeoutMs: 15_000 });
    d1.child.kill('SIGCONT');
    await untilTraffic(topo, a, b, Date.now());
    const s = await status(h1);
    const sys = await topo.exec(h1.ns, ['cat', '/sys/class/net/ipip0/statistics/tx_dropped']);
    expect(s.counters.tun_kernel_tx_dropped).toBeGreaterThan(0);
    expect(s.counters.tun_kernel_tx_dropped).toBe(Number(sys.stdout.trim()));
    for (const d of [d1, d2]) {
      running.delete(d);
      expect(await stopDaemon(d)).toBe(0);
    }
    await expectNothingLeft(topo, h1);
  });

  test.each([
    { drop: 'cap_net_raw', code: 'ERR_RAW_SOCKET', missing: 'CAP_NET_RAW' },
    { drop: 'cap_net_admin', code: 'ERR_TUN_OPEN', missing: 'CAP_NET_ADMIN' },
  ])('without $missing: $code names it, nothing is left', async ({ drop, code, missing }) => {
    const d = await spawnDaemon(topo, h1, h1.config, { prefix: ['capsh', `--drop=${drop}`, '--', '-c', 'exec "$@"', 'ipipd'] });
    running.add(d);
    expect(d.up).toBe(false);
    const exit = await within(d.exited, 15_000, 'ipipd to exit');
    running.delete(d);
    expect(exit).toBe(1);
    expect(d.log()).toMatch(new RegExp(`ipipd: ${code}: .*EPERM \\(${missing} is missing`));
    await expectNothingLeft(topo, h1);
  });
});
