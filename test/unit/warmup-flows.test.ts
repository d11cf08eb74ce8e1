/**
 * The flows the data path's JIT warm-up (src/dataplane/warmup.ts) picks for its synthetic
 * packets: `warmUpFlows` on configs from `parseConfig`, with the Tunnel the queue factory makes
 * of them (test/helpers/warmup-setup.ts). The packets are in warmup-packets.test.ts, the
 * procedure run for real in warmup.test.ts.
 *
 * Flow of this file: one flow per peer, its remote in the peer's first prefix and its local the
 * TUN address (as it is, host bits and all); without a TUN address, the first candidate routed
 * to no peer and no underlay address; /32 and /31 prefixes; prefixes shadowed by another peer's
 * more specific one; and no flows at all when no local address is usable.
 */
import { describe, expect, it } from 'vitest';
import { warmUpFlows } from '../../src/dataplane/warmup.js';
import { ip } from '../helpers/packets.js';
import { TWO_PEERS, tunnelOf } from '../helpers/warmup-setup.js';

describe('warmUpFlows', () => {
  const flowsOf = (text: string): ReturnType<typeof tunnelOf> & { flows: ReturnType<typeof warmUpFlows> } => {
    const t = tunnelOf(text);
    return { ...t, flows: warmUpFlows(t.c, t.tunnel) };
  };

  it('one flow per peer: remote in its first prefix (host part 1), local = the TUN address', () => {
    const { tunnel, peers, flows } = flowsOf(TWO_PEERS);
    expect(flows).toEqual([
      { endpoint: ip('192.0.2.2'), remote: ip('203.0.113.1'), local: ip('198.51.100.0') },
      { endpoint: ip('192.0.2.3'), remote: ip('203.0.113.129'), local: ip('198.51.100.0') },
    ]);
    flows.forEach((f, i) => {
      expect(tunnel.routes.lookup(f.remote)).toBe(peers[i]);
      expect(f.endpoint).toBe(peers[i]!.endpoint);
      expect(tunnel.routes.lookup(f.local)).toBeUndefined();
      expect(tunnel.isTunnelAddress(f.local)).toBe(false);
      expect(tunnel.isTunnelAddress(f.remote)).toBe(false);
    });
  });

  it('a TUN address with host bits (an interface address) is used as it is', () => {
    const { flows } = flowsOf(TWO_PEERS.replace('198.51.100.0/32', '198.51.100.1/25'));
    expect(flows.map((f) => f.local)).toEqual([ip('198.51.100.1'), ip('198.51.100.1')]);
  });

  it('without a TUN address: the first candidate routed to no peer and not an endpoint', () => {
    const base = `
underlay: { address: 192.0.2.1 }
peers:
  - { name: h2, endpoint: 192.0.2.2, prefixes: [203.0.113.0/25] }
`;
    expect(flowsOf(`tun: { name: ipip0 }\n${base}`).flows).toEqual([{ endpoint: ip('192.0.2.2'), remote: ip('203.0.113.1'), local: ip('10.0.0.1') }]);
    // 10.0.0.1 and 100.64.0.1 are routed to peers: the next candidate.
    const { flows, tunnel } = flowsOf(`
tun: { name: ipip0 }
underlay: { address: 192.0.2.1 }
peers:
  - { name: h2, endpoint: 192.0.2.2, prefixes: [10.0.0.0/8] }
  - { name: h3, endpoint: 192.0.2.3, prefixes: [100.64.0.0/10] }
`);
    expect(flows.map((f) => f.local)).toEqual([ip('198.18.0.1'), ip('198.18.0.1')]);
    expect(flows.map((f) => f.remote)).toEqual([ip('10.0.0.1'), ip('100.64.0.1')]);
    expect(tunnel.routes.lookup(ip('198.18.0.1'))).toBeUndefined();
  });

  it('an underlay address among the candidates is skipped (it is no inner address)', () => {
    const { flows } = flowsOf(`
tun: { name: ipip0 }
underlay: { address: 10.0.0.1 }
peers:
  - { name: h2, endpoint: 10.0.0.2, prefixes: [203.0.113.0/25] }
`);
    expect(flows.map((f) => f.local)).toEqual([ip('100.64.0.1')]);
  });

  it('/32 and /31 prefixes: the prefix address itself', () => {
    const { flows } = flowsOf(`
tun: { name: ipip0, address: 198.51.100.0/32 }
underlay: { address: 192.0.2.1 }
peers:
  - { name: h2, endpoint: 192.0.2.2, prefixes: [203.0.113.7/32] }
  - { name: h3, endpoint: 192.0.2.3, prefixes: [203.0.113.10/31] }
  - { name: h4, endpoint: 192.0.2.4, prefixes: [203.0.113.12/30] }
`);
    expect(flows.map((f) => f.remote)).toEqual([ip('203.0.113.7'), ip('203.0.113.10'), ip('203.0.113.13')]);
  });

  it('a peer whose only prefix is shadowed by a more specific prefix of another peer gets no flow', () => {
    const { flows, peers, tunnel } = flowsOf(`
tun: { name: ipip0, address: 198.51.100.0/32 }
underlay: { address: 192.0.2.1 }
peers:
  - { name: wide, endpoint: 192.0.2.2, prefixes: [203.0.113.0/24] }
  - { name: narrow, endpoint: 192.0.2.3, prefixes: [203.0.113.0/25] }
`);
    // Overlapping (not identical) prefixes are accepted by the config; LPM gives .1 to "narrow".
    expect(tunnel.routes.lookup(ip('203.0.113.1'))).toBe(peers[1]);
    expect(flows).toEqual([{ endpoint: ip('192.0.2.3'), remote: ip('203.0.113.1'), local: ip('198.51.100.0') }]);
  });

  it('a shadowed first prefix is skipped for the next one that routes to the peer', () => {
    const { flows } = flowsOf(`
tun: { name: ipip0, address: 198.51.100.0/32 }
underlay: { address: 192.0.2.1 }
peers:
  - { name: wide, endpoint: 192.0.2.2, prefixes: [203.0.113.0/24, 10.1.0.0/16] }
  - { name: narrow, endpoint: 192.0.2.3, prefixes: [203.0.113.0/25] }
`);
    expect(flows).toEqual([
      { endpoint: ip('192.0.2.2'), remote: ip('10.1.0.1'), local: ip('198.51.100.0') },
      { endpoint: ip('192.0.2.3'), remote: ip('203.0.113.1'), local: ip('198.51.100.0') },
    ]);
  });

  it('no usable local address (every candidate routed to a peer): no flows at all', () => {
    const { flows } = flowsOf(`
tun: { name: ipip0 }
underlay: { address: 192.0.2.1 }
peers:
  - { name: h2, endpoint: 192.0.2.2, prefixes: [10.0.0.0/8, 100.64.0.0/10, 198.18.0.0/15, 172.16.0.0/12, 192.168.0.0/16] }
`);
    expect(flows).toEqual([]);
  });
});
