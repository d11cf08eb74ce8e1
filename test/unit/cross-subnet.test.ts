/**
 * Cross-subnet mode and own blocks (issue 12; src/daemon/cross-subnet.ts): the config rules with
 * the path each problem names, the same-subnet decision, the plain routes a peer set gets, and
 * what a reload changes (src/daemon/peer-set.ts diffPeers / describeChange), and what the route
 * keeper (src/daemon/plain-routes.ts) asks of rtnetlink.
 */
import { pino } from 'pino';
import { describe, expect, test } from 'vitest';
import { describeConfig, parseConfig, type Config } from '../../src/daemon/config.js';
import { plainRoutes, plainRouteText, sameSubnet, tunnelled, underlaySubnet } from '../../src/daemon/cross-subnet.js';
import { IpipdError } from '../../src/daemon/errors.js';
import { changeCounts, describeChange, diffPeers, installedPrefixes, isEmpty, livePeers, restartKeys, type KernelRoute } from '../../src/daemon/peer-set.js';
import { UnderlayRoutes } from '../../src/daemon/plain-routes.js';
import { formatIPv4, parseIPv4 } from '../../src/routing/prefix.js';
import type { RouteSpec, Rtnl } from '../../src/tun/netlink.js';

/** h2 on 192.0.2.0/25 with us (192.0.2.1), h3 behind a router on 192.0.2.128/25. */
const BASE = `
tun: { name: ipip0, address: 198.51.100.0/32 }
underlay: { address: 192.0.2.1 }
peers:
  - { name: h2, endpoint: 192.0.2.2, prefixes: [203.0.113.0/25, 203.0.113.128/26] }
  - { name: h3, endpoint: 192.0.2.129, prefixes: [198.51.100.128/25] }
`;

const cfg = (more = '', base = BASE): Config => parseConfig(base + more, 'test.yaml');

/** The problems a config gives, one per line without the first ("test.yaml: N problems:"). */
function problems(text: string): string[] {
  try {
    parseConfig(text, 'test.yaml');
  } catch (err) {
    expect(err).toBeInstanceOf(IpipdError);
    expect((err as IpipdError).code).toBe('ERR_CONFIG_INVALID');
    return (err as IpipdError).message.split('\n').slice(1).map((l) => l.trim());
  }
  throw new Error('expected the config to be rejected');
}

describe('config: encap.mode, encap.subnet, routes.own_blocks', () => {
  test('defaults: mode always, no subnet, no own blocks', () => {
    const c = cfg();
    expect(c.encap.mode).toBe('always');
    expect(c.encap.subnet).toBeUndefined();
    expect(c.routes.own_blocks).toEqual([]);
  });

  test('every key set', () => {
    const c = cfg('encap: { mode: cross-subnet, subnet: 192.0.2.0/25 }\nroutes: { own_blocks: [198.51.100.0/26, 198.51.100.64/26] }\n');
    expect(c.encap).toMatchObject({ mode: 'cross-subnet', subnet: { text: '192.0.2.0/25', len: 25 } });
    expect(c.routes.own_blocks.map((b) => b.text)).toEqual(['198.51.100.0/26', '198.51.100.64/26']);
  });

  test('bad values name their path', () => {
    expect(problems(BASE + 'encap: { mode: crosssubnet }\n')).toEqual([expect.stringMatching(/^encap\.mode: .*"always"\|"cross-subnet"/)]);
    expect(problems(BASE + 'encap: { subnet: 192.0.2.1/25 }\n')).toEqual(['encap.subnet: host bits set: 192.0.2.1/25 (did you mean 192.0.2.0/25?)']);
    expect(problems(BASE + 'encap: { subnet: 192.0.2.128/25 }\n')).toEqual(["encap.subnet: 192.0.2.128/25 does not contain this host's underlay.address 192.0.2.1"]);
    expect(problems(BASE + 'routes: { own_blocks: [198.51.100.1/26] }\n')).toEqual(['routes.own_blocks[0]: host bits set: 198.51.100.1/26 (did you mean 198.51.100.0/26?)']);
    expect(problems(BASE + 'routes: { own_blocks: [not-a-block] }\n')).toEqual(['routes.own_blocks[0]: not an IPv4 prefix: "not-a-block" (expected a.b.c.d/len)']);
  });

  test('an own block may not overlap another, a peer prefix, the underlay address or an endpoint', () => {
    expect(problems(BASE + 'routes: { own_blocks: [198.51.100.0/26, 198.51.100.0/27, 203.0.113.64/26, 192.0.2.0/30, 192.0.2.128/31] }\n')).toEqual([
      'routes.own_blocks[1]: 198.51.100.0/27 overlaps routes.own_blocks[0] 198.51.100.0/26',
      'routes.own_blocks[2]: 203.0.113.64/26 overlaps peers[0].prefixes[0] 203.0.113.0/25 (peer h2): a block is either this host\'s or a peer\'s',
      "routes.own_blocks[3]: 192.0.2.0/30 contains this host's underlay.address 192.0.2.1: the blackhole would cut the underlay",
      "routes.own_blocks[3]: 192.0.2.0/30 contains peer h2's endpoint 192.0.2.2: the blackhole would cut the underlay",
      "routes.own_blocks[4]: 192.0.2.128/31 contains peer h3's endpoint 192.0.2.129: the blackhole would cut the underlay",
    ]);
  });

  test("the TUN's own address may be inside an own block (Calico puts tunl0's address in the node's block)", () => {
    expect(cfg('routes: { own_blocks: [198.51.100.0/26] }\n').routes.own_blocks).toHaveLength(1);
  });

  test('describeConfig names the mode, the plain-routed peers and the blackholes', () => {
    expect(describeConfig(cfg())).toContain('encap mode always: every peer through the tunnel');
    const lines = describeConfig(cfg('encap: { mode: cross-subnet, subnet: 192.0.2.0/25 }\nroutes: { own_blocks: [198.51.100.0/26] }\n'));
    expect(lines).toContain('encap mode cross-subnet: a peer inside 192.0.2.0/25 by a plain route via its endpoint (h2), others through the tunnel');
    expect(lines).toContain('own blocks 198.51.100.0/26: a blackhole route each (proto 77, table 254)');
    expect(describeConfig(cfg('encap: { mode: cross-subnet }\n'))).toContain(
      "encap mode cross-subnet: a peer inside underlay.address's subnet on its device by a plain route via its endpoint, others through the tunnel",
    );
  });
});

describe('the same-subnet decision', () => {
  test('the subnet: encap.subnet if given, else the kernel prefix length of underlay.address', () => {
    expect(underlaySubnet(cfg(), 25).text).toBe('192.0.2.0/25');
    expect(underlaySubnet(cfg(), 24).text).toBe('192.0.2.0/24');
    expect(underlaySubnet(cfg(), 32).text).toBe('192.0.2.1/32');
    expect(underlaySubnet(cfg('encap: { subnet: 192.0.2.0/26 }\n'), 24).text).toBe('192.0.2.0/26');
  });

  test('an endpoint is on the subnet when the subnet contains it, at both edges', () => {
    const s = underlaySubnet(cfg(), 25);
    for (const a of ['192.0.2.0', '192.0.2.2', '192.0.2.127']) expect(sameSubnet(s, parseIPv4(a)!), a).toBe(true);
    for (const a of ['192.0.2.128', '192.0.2.129', '198.51.100.2', '0.0.0.0']) expect(sameSubnet(s, parseIPv4(a)!), a).toBe(false);
  });

  test('cross-subnet: h2 (same /25) by plain routes, h3 (other /25) through the TUN', () => {
    const c = cfg('encap: { mode: cross-subnet }\n');
    const peers = livePeers(c, []).peers;
    expect(plainRoutes(c, peers, 25).map((r) => plainRouteText(r, 'ul0'))).toEqual(['203.0.113.0/25 via 192.0.2.2 dev ul0', '203.0.113.128/26 via 192.0.2.2 dev ul0']);
    expect(peers.map((p) => tunnelled(c, p, 25))).toEqual([false, true]);
    expect(installedPrefixes(c, peers, 25)).toEqual(['198.51.100.128/25']);
    // A /24 on the device puts h3 on the subnet too; a /32 puts nobody there.
    expect(plainRoutes(c, peers, 24).map((r) => r.peer)).toEqual(['h2', 'h2', 'h3']);
    expect(plainRoutes(c, peers, 32)).toEqual([]);
    expect(installedPrefixes(c, peers, 32)).toEqual(['203.0.113.0/25', '203.0.113.128/26', '198.51.100.128/25']);
  });

  test('mode always, or routes.install false: no plain routes', () => {
    const always = cfg();
    expect(plainRoutes(always, livePeers(always, []).peers, 25)).toEqual([]);
    expect(installedPrefixes(always, livePeers(always, []).peers, 25)).toHaveLength(3);
    const off = cfg('encap: { mode: cross-subnet }\nroutes: { install: false }\n');
    expect(plainRoutes(off, livePeers(off, []).peers, 25)).toEqual([]);
  });

  test('kernel-learned prefixes are the routing engine\'s: never a plain route of ipipd\'s', () => {
    const c = cfg('encap: { mode: cross-subnet }\nunderlay: { address: 192.0.2.1, allowed_endpoints: [192.0.2.0/24] }\nroutes: { source: kernel }\n', 'tun: { name: ipip0 }\n');
    const r: KernelRoute = { prefix: { text: '203.0.113.0/25', addr: parseIPv4('203.0.113.0')!, len: 25 }, gateway: parseIPv4('192.0.2.2')! };
    const peers = livePeers(c, [r]).peers;
    expect(peers.map((p) => p.name)).toEqual(['kernel:192.0.2.2']);
    expect(plainRoutes(c, peers, 25)).toEqual([]);
  });
});

describe('reload: mode, subnet and own blocks change live', () => {
  const diff = (a: Config, b: Config, len = 25): ReturnType<typeof diffPeers> => diffPeers(a, livePeers(a, []).peers, b, livePeers(b, []).peers, len);

  test('none of the three keys needs a restart', () => {
    const a = cfg();
    const b = cfg('encap: { mode: cross-subnet, subnet: 192.0.2.0/25 }\nroutes: { own_blocks: [198.51.100.0/26] }\n');
    expect(restartKeys(a, b, livePeers(a, []).peers, livePeers(b, []).peers)).toEqual([]);
  });

  test('always -> cross-subnet: h2\'s TUN routes go, its plain routes come; and back', () => {
    const a = cfg();
    const b = cfg('encap: { mode: cross-subnet }\n');
    const d = diff(a, b);
    expect(describeChange(d, 'ipip0', 'ul0')).toEqual([
      'delete route 203.0.113.0/25 dev ipip0',
      'delete route 203.0.113.128/26 dev ipip0',
      'add route 203.0.113.0/25 via 192.0.2.2 dev ul0 (peer h2, same underlay subnet: no IPIP)',
      'add route 203.0.113.128/26 via 192.0.2.2 dev ul0 (peer h2, same underlay subnet: no IPIP)',
      'encap mode always -> cross-subnet, subnet auto -> auto',
    ]);
    expect(changeCounts(d)).toEqual({ added: 0, removed: 0, changed: 0, routesAdded: 2, routesRemoved: 2 });
    expect(describeChange(diff(b, a), 'ipip0', 'ul0')).toEqual([
      'add route 203.0.113.0/25 dev ipip0',
      'add route 203.0.113.128/26 dev ipip0',
      'delete route 203.0.113.0/25 via 192.0.2.2 dev ul0',
      'delete route 203.0.113.128/26 via 192.0.2.2 dev ul0',
      'encap mode cross-subnet -> always, subnet auto -> auto',
    ]);
  });

  test('a peer added on the subnet gets a plain route; one whose endpoint moves changes its next hop', () => {
    const a = cfg('encap: { mode: cross-subnet }\n');
    const b = cfg('encap: { mode: cross-subnet }\n', BASE.replace('192.0.2.2,', '192.0.2.3,') + '  - { name: h4, endpoint: 192.0.2.4, prefixes: [203.0.113.192/26] }\n');
    expect(describeChange(diff(a, b), 'ipip0', 'ul0')).toEqual([
      'add peer h4 endpoint 192.0.2.4 prefixes 203.0.113.192/26',
      'change peer h2: endpoint 192.0.2.2 -> 192.0.2.3',
      'add route 203.0.113.0/25 via 192.0.2.3 dev ul0 (peer h2, same underlay subnet: no IPIP)',
      'add route 203.0.113.128/26 via 192.0.2.3 dev ul0 (peer h2, same underlay subnet: no IPIP)',
      'add route 203.0.113.192/26 via 192.0.2.4 dev ul0 (peer h4, same underlay subnet: no IPIP)',
      'delete route 203.0.113.0/25 via 192.0.2.2 dev ul0',
      'delete route 203.0.113.128/26 via 192.0.2.2 dev ul0',
    ]);
  });

  test('own blocks added and removed', () => {
    const a = cfg('routes: { own_blocks: [198.51.100.0/26] }\n');
    const b = cfg('routes: { own_blocks: [198.51.100.64/26] }\n');
    const d = diff(a, b);
    expect(describeChange(d, 'ipip0', 'ul0')).toEqual(['add route blackhole 198.51.100.64/26 (routes.own_blocks)', 'delete route blackhole 198.51.100.0/26']);
    expect(isEmpty(d)).toBe(false);
    expect(isEmpty(diff(a, a))).toBe(true);
  });
});

/** An Rtnl that records route adds and deletes (as `ip route` words) and fails where told. */
class FakeRtnl {
  readonly calls: string[] = [];
  failDel = false;
  async addRoute(r: RouteSpec, replace = false): Promise<void> {
    this.calls.push(`${replace ? 'replace' : 'add'} ${show(r)}`);
  }
  async delRoute(r: RouteSpec): Promise<void> {
    this.calls.push(`del ${show(r)}`);
    if (this.failDel) throw Object.assign(new Error('ESRCH'), { code: 'ESRCH' });
  }
}

function show(r: RouteSpec): string {
  const dst = `${formatIPv4(r.dst)}/${r.dstLen}`;
  if (r.blackhole) return `blackhole ${dst} proto ${r.protocol} table ${r.table}`;
  return `${dst}${r.gateway !== undefined ? ` via ${formatIPv4(r.gateway)}` : ''} oif ${r.oif} proto ${r.protocol} table ${r.table}${r.metric !== undefined ? ` metric ${r.metric}` : ''}`;
}

describe('UnderlayRoutes: what goes to rtnetlink', () => {
  const c = cfg('encap: { mode: cross-subnet }\nroutes: { table: 100, metric: 5 }\n');
  const [r0, r1] = plainRoutes(c, livePeers(c, []).peers, 25);
  const logged: string[] = [];
  const make = (): { rt: FakeRtnl; u: UnderlayRoutes } => {
    const rt = new FakeRtnl();
    const log = pino({ level: 'error' }, { write: (line: string) => void logged.push(line) });
    return { rt, u: new UnderlayRoutes(rt as unknown as Rtnl, log, 100, 5, { name: 'ul0', index: 7 }) };
  };

  test("plain routes and blackholes carry ipipd's protocol, table and metric; release deletes every one", async () => {
    const { rt, u } = make();
    await u.addPlain(r0!, false);
    await u.addBlackhole(c.peers[1]!.prefixes[0]!);
    expect(u.lines()).toEqual({ plain: ['203.0.113.0/25 via 192.0.2.2 dev ul0'], blackholes: ['blackhole 198.51.100.128/25'] });
    expect(u.recorded()).toEqual({ plain: [{ dst: '203.0.113.0/25', via: '192.0.2.2', ifindex: 7 }], blackholes: ['198.51.100.128/25'] });
    await u.release();
    expect(rt.calls).toEqual([
      'add 203.0.113.0/25 via 192.0.2.2 oif 7 proto 77 table 100 metric 5',
      'add blackhole 198.51.100.128/25 proto 77 table 100',
      'del blackhole 198.51.100.128/25 proto 77 table 100',
      'del 203.0.113.0/25 via 192.0.2.2 oif 7 proto 77 table 100 metric 5',
    ]);
    expect(u.lines()).toEqual({ plain: [], blackholes: [] });
  });

  test('a new next hop for a prefix replaces the route; deleting the old one then touches nothing', async () => {
    const { rt, u } = make();
    await u.addPlain(r0!, false);
    const moved = { ...r0!, via: { text: '192.0.2.3', value: parseIPv4('192.0.2.3')! } };
    await u.addPlain(moved, false);
    await u.delPlain(r0!);
    expect(rt.calls).toEqual(['add 203.0.113.0/25 via 192.0.2.2 oif 7 proto 77 table 100 metric 5', 'replace 203.0.113.0/25 via 192.0.2.3 oif 7 proto 77 table 100 metric 5']);
    expect(u.hasPlain('203.0.113.0/25')).toBe(true);
    // A TUN route took the prefix over: forgotten, not deleted at exit.
    u.forgetPlain('203.0.113.0/25');
    await u.addPlain(r1!, true);
    await u.release();
    expect(rt.calls.slice(2)).toEqual(['replace 203.0.113.128/26 via 192.0.2.2 oif 7 proto 77 table 100 metric 5', 'del 203.0.113.128/26 via 192.0.2.2 oif 7 proto 77 table 100 metric 5']);
  });

  test('a delete that fails at exit is logged and the others still go', async () => {
    const { rt, u } = make();
    await u.addPlain(r0!, false);
    await u.addPlain(r1!, false);
    rt.failDel = true;
    logged.length = 0;
    await u.release();
    expect(rt.calls.filter((x) => x.startsWith('del'))).toHaveLength(2);
    expect(logged.map((l) => JSON.parse(l) as { step: string; msg: string })).toMatchObject([
      { step: 'delete 203.0.113.128/26 via 192.0.2.2 dev ul0', msg: 'cleanup step failed' },
      { step: 'delete 203.0.113.0/25 via 192.0.2.2 dev ul0', msg: 'cleanup step failed' },
    ]);
    expect(u.lines().plain).toEqual([]);
  });
});
