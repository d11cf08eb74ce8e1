/**
 * The FOU keys of the config (README "FOU"): per-peer `encap` and the top-level `fou` section,
 * their defaults, the errors naming each bad value's path, `fouInUse`, what a reload says of an
 * encap change, and that a FOU peer where no FOU socket is open needs a restart.
 */
import { describe, expect, test } from 'vitest';
import { allFou, fouInUse } from '../../src/daemon/config-plain.js';
import { describeConfig, parseConfig } from '../../src/daemon/config.js';
import { IpipdError } from '../../src/daemon/errors.js';
import { diffPeers, livePeers, restartKeys } from '../../src/daemon/peer-set.js';
import { ip } from '../helpers/packets.js';

/** A config with one peer h2; `peer` adds keys to its entry, `rest` top-level sections. */
const cfg = (peer = '', rest = '', underlay = ''): string =>
  `underlay: { address: 192.0.2.1${underlay} }\npeers:\n  - { name: h2, endpoint: 192.0.2.2, prefixes: [203.0.113.0/25]${peer} }\n${rest}`;

/** The problem lines of the one error a bad config gives. */
function problems(text: string): string[] {
  let thrown: unknown = null;
  try {
    parseConfig(text, 'fou.yaml');
  } catch (err) {
    thrown = err;
  }
  expect(thrown).toBeInstanceOf(IpipdError);
  const e = thrown as IpipdError;
  expect(e.code).toBe('ERR_CONFIG_INVALID');
  return e.message.split('\n').slice(1).map((l) => l.trim());
}

describe('FOU config', () => {
  test('defaults: peers are ipip, fou port 5555, source port auto over 8 ports, kernel peers ipip, offload on; no FOU in use', () => {
    const c = parseConfig(cfg());
    expect(c.peers[0]!.encap).toBe('ipip');
    expect(c.fou).toEqual({ port: 5555, source_port: 'auto', source_ports: 8, kernel_peers: 'ipip', offload: true });
    expect(fouInUse(c)).toBe(false);
    expect(describeConfig(c).join('\n')).not.toMatch(/fou/);
  });

  test('a FOU peer, a fixed source port: in use, and described', () => {
    const c = parseConfig(cfg(', encap: fou', 'fou: { port: 4789, source_port: 4789, offload: false }\n'));
    expect(c.peers[0]!.encap).toBe('fou');
    expect(c.fou).toMatchObject({ port: 4789, source_port: 4789, offload: false });
    expect(fouInUse(c)).toBe(true);
    const lines = describeConfig(c);
    expect(lines).toContain('peer h2 endpoint 192.0.2.2 prefixes 203.0.113.0/25 encap fou');
    expect(lines).toContain('fou port 4789 source port 4789 kernel peers ipip offload off');
    // Every peer on FOU: the default TUN MTU leaves 28 bytes (lifecycle.ts uses the same allFou).
    expect(lines[0]).toBe('tun ipip0 mtu auto (underlay MTU - 28: every peer uses FOU) txqueuelen 1000');
    expect(allFou(c)).toBe(true);
    // One ipip peer besides: 20.
    const mixed = parseConfig(`underlay: { address: 192.0.2.1 }\npeers:\n  - { name: h2, endpoint: 192.0.2.2, prefixes: [203.0.113.0/25], encap: fou }\n  - { name: h3, endpoint: 192.0.2.3, prefixes: [198.51.100.0/25] }\n`);
    expect(allFou(mixed)).toBe(false);
    expect(describeConfig(mixed)[0]).toBe('tun ipip0 mtu auto (underlay MTU - 20) txqueuelen 1000');
  });

  test('kernel-learned peers on FOU put FOU in use with no configured FOU peer', () => {
    const c = parseConfig(cfg('', 'routes: { source: kernel }\nfou: { kernel_peers: fou }\n', ', allowed_endpoints: [192.0.2.0/24]'));
    expect(fouInUse(c)).toBe(true);
    const { peers } = livePeers(c, [{ prefix: { text: '198.51.100.0/26', addr: ip('198.51.100.0'), len: 26 }, gateway: ip('192.0.2.3') }]);
    expect(peers.map((p) => [p.name, p.encap])).toEqual([['h2', 'ipip'], ['kernel:192.0.2.3', 'fou']]);
  });

  test('bad values: each named by its path, all in one error', () => {
    const p = problems(cfg(', encap: gre', 'fou: { port: 0, source_port: any, source_ports: 65, kernel_peers: udp, offload: yes, extra: 1 }\n'));
    expect(p.some((l) => l.startsWith('peers[0].encap:'))).toBe(true);
    expect(p.some((l) => l.startsWith('fou.port:'))).toBe(true);
    expect(p).toContain('fou.source_port: expected auto, or a UDP port from 1 to 65535; got "any"');
    expect(p.some((l) => l.startsWith('fou.source_ports:'))).toBe(true);
    expect(p.some((l) => l.startsWith('fou.kernel_peers:'))).toBe(true);
    expect(p.some((l) => l.startsWith('fou.offload:'))).toBe(true);
    expect(p.some((l) => l.includes('extra'))).toBe(true);
  });

  test('a FOU peer whose mtu + 28 does not fit in an IPv4 datagram', () => {
    expect(problems(cfg(', encap: fou, mtu: 65510'))).toEqual(['peers[0].mtu: mtu + 28 bytes of FOU outer headers (IPv4 and UDP) must fit in 65535']);
  });

  test('reload: an encap change is described; a FOU peer where no FOU socket is open needs a restart', () => {
    const live = parseConfig(cfg());
    const next = parseConfig(cfg(', encap: fou'));
    const [a, b] = [livePeers(live, []).peers, livePeers(next, []).peers];
    expect(diffPeers(live, a, next, b).changed).toEqual([{ peer: b[0], what: ['encap ipip -> fou'] }]);
    expect(restartKeys(live, next, a, b)).toContain('peers (encap: fou, with no FOU socket open)');
    // With FOU sockets open (a FOU peer already), switching another back and forth is live.
    expect(restartKeys(next, live, b, a)).toEqual([]);
  });
});
