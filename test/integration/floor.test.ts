/**
 * The bench's Node floor references (bench/floor.ts, started by bench/modes.ts): the least a
 * Node.js data path does, IPIP over a raw socket (`node-floor`) or IP in UDP as quicktun's raw
 * protocol (`node-floor-udp`). Every `npm run bench` prints their figures beside ipipd's, so they
 * must be what they say: started as the bench starts them, pod A and pod B ping each other and
 * 4 MiB of TCP arrives byte for byte each way, the underlay carries protocol 4 (or UDP to port
 * 2999) whose payload is the inner packet, and stopping the mode leaves no device behind.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { MODES, POD_MTU, type ActiveMode, type ModeName } from '../../bench/modes.js';
import { Topology } from '../../tools/netns/topology.js';
import { tcpdumpFrames } from '../helpers/packets.js';
import { pingBothWays, tcpTransfer } from '../helpers/pair.js';
import { integrationSkip, skipWithout } from '../helpers/skip.js';

const why = integrationSkip('node-floor bench modes');

const CASES: Array<{ mode: ModeName; filter: string; outerLen: number; protocol: number }> = [
  { mode: 'node-floor', filter: 'ip proto 4', outerLen: 20, protocol: 4 },
  { mode: 'node-floor-udp', filter: 'udp port 2999', outerLen: 28, protocol: 17 },
];

describe.skipIf(why).each(CASES)('$mode', ({ mode, filter, outerLen, protocol }) => {
  let topo: Topology;
  let active: ActiveMode | null = null;
  let tmpDir: string;

  beforeAll(async () => {
    const spec = MODES[mode];
    expect(spec.missing()).toBeNull();
    topo = await Topology.up({ hosts: 2, pods: 1, underlay: 'direct', underlayMtu: spec.underlayMtu, podMtu: POD_MTU });
    tmpDir = mkdtempSync(join(tmpdir(), 'ipipd-floor-'));
    active = await spec.start(topo, { prefix: topo.prefix, tmpDir });
  });

  afterAll(async () => {
    await active?.stop();
    await topo?.down();
    if (tmpDir) rmSync(tmpDir, { recursive: true, force: true });
  });

  test('pods reach each other through it; TCP arrives byte for byte both ways', async () => {
    const [a, b] = [topo.host(1).pods[0]!, topo.host(2).pods[0]!];
    await pingBothWays(topo, a, b);
    await tcpTransfer(topo, a, b, 4 << 20, 31, 60);
    await tcpTransfer(topo, b, a, 4 << 20, 32, 60);
    expect(active!.dead()).toBeNull();
  });

  test.skipIf(skipWithout('tcpdump', 'ping'))('the underlay carries the inner packet behind the outer headers', async () => {
    const [a, b] = [topo.host(1).pods[0]!, topo.host(2).pods[0]!];
    const cap = topo.spawn(topo.host(2).ns, ['tcpdump', '-i', 'ul0', '-l', '-n', '-x', filter]);
    let text = '';
    cap.stdout?.on('data', (d: Buffer) => (text += d.toString()));
    await new Promise((r) => setTimeout(r, 500));
    const ping = await topo.exec(a.ns, ['ping', '-c', '2', '-i', '0.2', b.address], { timeoutMs: 10_000 });
    expect(ping.stdout).toMatch(/2 received/);
    await new Promise((r) => setTimeout(r, 300));
    cap.kill('SIGTERM');
    const frames = tcpdumpFrames(text)
      .map((f) => f.bytes)
      .filter((bytes) => bytes.length > outerLen);
    // Two requests out, two replies back.
    expect(frames.length, text).toBe(4);
    for (const bytes of frames) {
      expect(bytes[9]).toBe(protocol);
      const inner = bytes.subarray(outerLen);
      expect(inner[0]).toBe(0x45);
      expect(inner[9]).toBe(1); // ICMP
      expect(inner.readUInt16BE(2)).toBe(bytes.length - outerLen);
    }
  });

  test('stopping it removes both TUN devices', async () => {
    const warnings = await active!.stop();
    active = null;
    expect(warnings).toEqual([]);
    for (const h of [topo.host(1), topo.host(2)]) {
      const links = await topo.exec(h.ns, ['ip', '-o', 'link', 'show']);
      expect(links.stdout).not.toMatch(/\bnf/);
    }
  });
});
