/**
 * The set-up the warm-up's unit tests share (test/unit/warmup-packets.test.ts,
 * warmup-flows.test.ts, warmup.test.ts): a two-peer config, and the Tunnel and Peers that the
 * queue factory (src/dataplane/queue.ts `buildTunnel`) makes of a config's text, as the daemon
 * does for one queue.
 */
import { parseConfig, type Config } from '../../src/daemon/config.js';
import { buildTunnel } from '../../src/dataplane/queue.js';
import type { Peer, Tunnel } from '../../src/ipip/index.js';

/** The TUN's MTU in every warm-up test. */
export const TUN_MTU = 1480;

/** Two peers, the second with two prefixes. */
export const TWO_PEERS = `
tun: { name: ipip0, address: 198.51.100.0/32 }
underlay: { address: 192.0.2.1 }
peers:
  - { name: h2, endpoint: 192.0.2.2, prefixes: [203.0.113.0/25] }
  - { name: h3, endpoint: 192.0.2.3, prefixes: [203.0.113.128/25, 10.9.0.0/16] }
`;

/** The config parsed from `text`, with the Tunnel and Peers one queue would run with. */
export function tunnelOf(text: string): { c: Config; tunnel: Tunnel; peers: Peer[] } {
  const c = parseConfig(text);
  const { tunnel, peers } = buildTunnel(c, TUN_MTU);
  return { c, tunnel, peers };
}
