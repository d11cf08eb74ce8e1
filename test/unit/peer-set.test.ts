/**
 * The live peer set (src/daemon/peer-set.ts): what a reload changes, the keys that need a
 * restart, and which kernel routes become peer prefixes (allowed endpoints, RFC 2003 §3.2 loops).
 */
import { describe, expect, test } from 'vitest';
import { parseConfig, type Config } from '../../src/daemon/config.js';
import { describeChange, diffPeers, isEmpty, livePeers, restartKeys, type KernelRoute } from '../../src/daemon/peer-set.js';
import { parseIPv4, parsePrefix } from '../../src/routing/prefix.js';

const BASE = `
tun: { name: ipip0, address: 198.51.100.0/32 }
underlay: { address: 192.0.2.1 }
peers:
  - { name: h2, endpoint: 192.0.2.2, prefixes: [203.0.113.0/25] }
  - { name: h3, endpoint: 192.0.2.3, prefixes: [203.0.113.128/25], mtu: 1400 }
`;

const cfg = (text: string): Config => parseConfig(text, 'test.yaml');

function route(prefix: string, gw: string): KernelRoute {
  const p = parsePrefix(prefix);
  if (typeof p === 'string') throw new Error(p);
  return { prefix: { text: prefix, addr: p.addr, len: p.len }, gateway: parseIPv4(gw)! };
}

function change(a: string, b: string): string[] {
  const c0 = cfg(a);
  const c1 = cfg(b);
  return describeChange(diffPeers(c0, livePeers(c0, []).peers, c1, livePeers(c1, []).peers), 'ipip0');
}

describe('reload diff', () => {
  test('the same config changes nothing', () => {
    const c = cfg(BASE);
    const d = diffPeers(c, livePeers(c, []).peers, c, livePeers(c, []).peers);
    expect(isEmpty(d)).toBe(true);
    expect(describeChange(d, 'ipip0')).toEqual(['no change']);
  });

  test('peers added, removed and changed (endpoint, prefixes, mtu), routes to match, in that order', () => {
    const next = `
tun: { name: ipip0, address: 198.51.100.0/32 }
underlay: { address: 192.0.2.1 }
icmp: { rate: 10, burst: 5 }
log: { level: debug }
peers:
  - { name: h2, endpoint: 192.0.2.20, prefixes: [203.0.113.0/26, 203.0.113.64/26] }
  - { name: h4, endpoint: 192.0.2.4, prefixes: [198.51.100.128/25] }
`;
    expect(change(BASE, next)).toEqual([
      'add peer h4 endpoint 192.0.2.4 prefixes 198.51.100.128/25',
      'remove peer h3 endpoint 192.0.2.3 prefixes 203.0.113.128/25',
      'change peer h2: endpoint 192.0.2.2 -> 192.0.2.20; prefixes +203.0.113.0/26 +203.0.113.64/26 -203.0.113.0/25',
      'add route 203.0.113.0/26 dev ipip0',
      'add route 203.0.113.64/26 dev ipip0',
      'add route 198.51.100.128/25 dev ipip0',
      'delete route 203.0.113.0/25 dev ipip0',
      'delete route 203.0.113.128/25 dev ipip0',
      'icmp rate 1000 -> 10/s, burst 50 -> 5',
      'log level info -> debug',
    ]);
    expect(change(BASE, BASE.replace('mtu: 1400', 'mtu: 1300'))).toEqual(['change peer h3: mtu 1400 -> 1300']);
  });

  test('with routes.install false no route changes', () => {
    const off = BASE.replace('peers:', 'routes: { install: false }\npeers:');
    expect(change(off, off.replace('203.0.113.128/25', '203.0.113.128/26'))).toEqual(['change peer h3: prefixes +203.0.113.128/26 -203.0.113.128/25']);
  });

  test('keys that cannot change live are named, sorted; live ones are not', () => {
    const c0 = cfg(BASE);
    const c1 = cfg(
      BASE.replace('name: ipip0', 'name: ipip1').replace('address: 192.0.2.1', 'address: 192.0.2.9') +
        'io: { batch: 32, queues: 2 }\nroutes: { table: 100 }\nicmp: { rate: 5 }\nencap: { ttl: 9 }\n',
    );
    expect(restartKeys(c0, c1, livePeers(c0, []).peers, livePeers(c1, []).peers)).toEqual([
      'control.socket',
      'io.batch',
      'io.queues',
      'routes.table',
      'tun.name',
      'underlay.address',
    ]);
  });

  test('with underlay.send: packet, the peer endpoints are fixed', () => {
    const p = BASE.replace('underlay: { address: 192.0.2.1 }', 'underlay: { address: 192.0.2.1, send: packet }');
    const c0 = cfg(p);
    const moved = cfg(p.replace('192.0.2.3,', '192.0.2.33,'));
    const mtu = cfg(p.replace('mtu: 1400', 'mtu: 1300'));
    expect(restartKeys(c0, moved, livePeers(c0, []).peers, livePeers(moved, []).peers)).toEqual(['peers (endpoints, with underlay.send: packet)']);
    expect(restartKeys(c0, mtu, livePeers(c0, []).peers, livePeers(mtu, []).peers)).toEqual([]);
  });
});

describe('kernel routes to peers', () => {
  const KERNEL = `
tun: { name: ipip0, address: 198.51.100.0/32 }
underlay: { address: 192.0.2.1, allowed_endpoints: [192.0.2.0/25] }
routes: { source: kernel }
peers:
  - { name: h2, endpoint: 192.0.2.2, prefixes: [203.0.113.0/26] }
`;

  test('kernel mode needs allowed_endpoints and lets peers be absent; config mode needs peers', () => {
    expect(() => cfg('underlay: { address: 192.0.2.1 }\nroutes: { source: kernel }\n')).toThrow(/underlay\.allowed_endpoints: required with routes\.source: kernel/);
    expect(cfg('underlay: { address: 192.0.2.1, allowed_endpoints: [192.0.2.0/24] }\nroutes: { source: kernel }\n').peers).toEqual([]);
    expect(() => cfg('underlay: { address: 192.0.2.1 }\n')).toThrow(/peers: at least one peer/);
    expect(() => cfg('underlay: { address: 192.0.2.1, allowed_endpoints: [0.0.0.0/0] }\nroutes: { source: kernel }\n')).toThrow(/allowed_endpoints\[0\]: 0\.0\.0\.0\/0 would let any gateway/);
    expect(() => cfg(KERNEL.replace('name: h2', 'name: "kernel:192.0.2.2"'))).toThrow(/peers\[0\]\.name: names starting with "kernel:"/);
    expect(() => cfg('underlay: { address: 192.0.2.1, send: packet, allowed_endpoints: [192.0.2.0/24] }\nroutes: { source: kernel }\n')).toThrow(/underlay\.send: packet needs a fixed peer set/);
  });

  test('a gateway becomes a peer owning its prefixes; a configured endpoint gains them; order does not matter', () => {
    const c = cfg(KERNEL);
    const routes = [route('198.51.100.192/26', '192.0.2.5'), route('203.0.113.64/26', '192.0.2.2'), route('198.51.100.128/26', '192.0.2.5'), route('10.0.0.0/8', '192.0.2.4')];
    const a = livePeers(c, routes);
    const b = livePeers(c, [...routes].reverse());
    expect(a).toEqual(b);
    expect(a.refused).toEqual([]);
    expect(a.peers.map((p) => [p.name, p.endpoint.text, p.prefixes.map((x) => `${x.text}:${x.source}`)])).toEqual([
      ['h2', '192.0.2.2', ['203.0.113.0/26:config', '203.0.113.64/26:kernel']],
      ['kernel:192.0.2.4', '192.0.2.4', ['10.0.0.0/8:kernel']],
      ['kernel:192.0.2.5', '192.0.2.5', ['198.51.100.128/26:kernel', '198.51.100.192/26:kernel']],
    ]);
  });

  test('refused: a gateway outside allowed_endpoints, our own address, a taken prefix, and every loop', () => {
    const c = cfg(KERNEL);
    const { peers, refused } = livePeers(c, [
      route('203.0.113.128/26', '192.0.2.200'),
      route('203.0.113.192/26', '192.0.2.1'),
      route('203.0.113.0/26', '192.0.2.3'),
      route('192.0.2.0/30', '192.0.2.9'),
      route('192.0.2.8/29', '192.0.2.9'),
      route('192.0.2.64/26', '192.0.2.9'),
      route('198.51.100.0/24', '192.0.2.9'),
      route('203.0.113.128/26', '192.0.2.9'),
    ]);
    expect(refused.map((r) => `${r.route}: ${r.reason}`)).toEqual([
      '203.0.113.128/26 via 192.0.2.200: gateway 192.0.2.200 is not inside underlay.allowed_endpoints',
      "203.0.113.192/26 via 192.0.2.1: gateway 192.0.2.1 is this host's own underlay.address",
      "203.0.113.0/26 via 192.0.2.3: prefix 203.0.113.0/26 is already a peer's",
      "192.0.2.0/30 via 192.0.2.9: prefix contains this host's underlay address: the tunnel would loop",
      '192.0.2.8/29 via 192.0.2.9: prefix contains its own gateway: the tunnel would loop',
      '192.0.2.64/26 via 192.0.2.9: prefix overlaps underlay.allowed_endpoints 192.0.2.0/25: the tunnel could loop',
      "198.51.100.0/24 via 192.0.2.9: prefix contains the TUN's own address",
    ]);
    expect(peers.map((p) => p.name)).toEqual(['h2', 'kernel:192.0.2.9']);
  });

  test('a reload keeps the kernel peers, and kernel prefixes are never installed as routes', () => {
    const c = cfg(KERNEL);
    const routes = [route('198.51.100.128/26', '192.0.2.5')];
    const now = livePeers(c, routes).peers;
    const next = cfg(KERNEL.replace('[203.0.113.0/26]', '[203.0.113.0/27]'));
    expect(describeChange(diffPeers(c, now, next, livePeers(next, routes).peers), 'ipip0')).toEqual([
      'change peer h2: prefixes +203.0.113.0/27 -203.0.113.0/26',
      'add route 203.0.113.0/27 dev ipip0',
      'delete route 203.0.113.0/26 dev ipip0',
    ]);
  });
});
