/**
 * ipipd's own rtnetlink (src/tun/netlink.ts over src/tun/nl-socket.ts and the addon's netlink
 * Reader) against the real kernel, inside a network namespace this test creates and always
 * deletes. The child fixture (test/fixtures/rtnl-child.ts, run from dist/ after `npm run build`)
 * makes the requests and reports what came back as JSON; every assertion is here, and `ip`
 * itself is the witness of what the requests did.
 *
 *   root namespace: nothing but `ip netns add/del rtl-<pid>-<random>`
 *
 *   rtl-<pid>-<random>
 *   +------------------------------------------------------------------------+
 *   |  rt0 (veth) 192.0.2.1/24 <-> rt1 (veth)                                  |
 *   |  routes in tables 1000, 100 (blackhole) and main (onlink)                |
 *   |  neighbours 192.0.2.2 (PERMANENT), 192.0.2.9 (created by NTF_USE)        |
 *   |  a route-group socket with a tiny buffer, overflowed: ENOBUFS            |
 *   +------------------------------------------------------------------------+
 */
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';

import { expectCleanRun, runFixtureInNetns, type ChildReport, type ChildResult } from '../helpers/child-fixture.js';
import { integrationSkip } from '../helpers/skip.js';

const FIXTURE = fileURLToPath(new URL('../../dist/test/fixtures/rtnl-child.js', import.meta.url));

interface Route { dst: string; dstLen: number; oif?: number; gateway?: string; table: number; protocol: number; type: number }
interface Report extends ChildReport {
  links: { names: string[]; after: { name: string; mtu: number; up: boolean; txqlen: number }; down: string; downUp: boolean };
  addresses: { again: string; listed: string[] };
  routes: {
    ip1000: string; ip100: string; ipMain: string; again: string; replace: string; replaced: string;
    listed1000: Route[]; listed100: Route[]; get: { oif: number; gateway?: string }; getDirect: { oif: number; gateway?: string };
    getNone: string; delAgain: string; afterDel: string;
  };
  neighbours: { missing: string; listed: Array<{ ifindex: number; dst: string; lladdr?: string; state: number }> };
  concurrent: { oneByOne: string[]; together: string[] };
  enobufs: { errors: string[]; eventsBefore: number; eventsAfter: number };
  hopWatch: { seen: string[] };
  sysfs: { first: number; index: number; afterDelete: string; afterReAdd: string; missing: number };
}

const skipReason = integrationSkip('rtnetlink.test.ts');

describe.skipIf(skipReason)("ipipd's rtnetlink against the kernel (in a private network namespace)", () => {
  let child: ChildResult;
  let r: Report;
  beforeAll(async () => {
    ({ child, report: r } = await runFixtureInNetns<Report>(FIXTURE, 'rtl', [], 30_000));
  });

  it('the child ran every step inside the namespace and exited by itself', () => {
    expectCleanRun(child, r);
  });

  it('links: listed; MTU, queue length and up/down set', () => {
    expect(r.links.names).toEqual(['lo', 'rt0', 'rt1']);
    expect(r.links.after).toMatchObject({ name: 'rt0', mtu: 1400, up: true, txqlen: 77 });
    expect([r.links.down, r.links.downUp]).toEqual(['ok', false]);
  });

  it("addresses: added, listed; a second add is EEXIST with the kernel's reason", () => {
    expect(r.addresses.listed).toEqual(['192.0.2.1/24']);
    expect(r.addresses.again).toBe('EEXIST | add address to link 3: EEXIST (ipv4: Address already assigned)');
  });

  it('routes: table above 255, protocol, metric, blackhole, onlink, replace, delete, as `ip route` shows them', () => {
    const t = r.routes;
    expect(t.ip1000).toBe('198.51.100.0/24 via 192.0.2.2 dev rt0 proto 77 metric 5');
    expect(t.ip100).toBe('blackhole 203.0.113.0/25 proto static');
    expect(t.ipMain).toContain('203.0.113.128/25 via 198.51.100.77 dev rt0 proto static onlink');
    expect(t.again).toBe('EEXIST | add route 198.51.100.0/24: EEXIST');
    expect([t.replace, t.replaced]).toEqual(['ok', '198.51.100.0/24 via 192.0.2.3 dev rt0 proto 77 metric 5']);
    expect(t.listed1000).toEqual([{ dst: '198.51.100.0', dstLen: 24, oif: 3, gateway: '192.0.2.3', table: 1000, protocol: 77, type: 1 }]);
    expect(t.listed100).toEqual([{ dst: '203.0.113.0', dstLen: 25, table: 100, protocol: 4, type: 6 }]);
    expect(t.get).toEqual({ oif: 3, gateway: '198.51.100.77' });
    expect(t.getDirect).toEqual({ oif: 3 });
    expect(t.getNone).toBe('ENETUNREACH | route get 198.51.100.50: ENETUNREACH');
    expect([t.delAgain, t.afterDel]).toEqual(['ESRCH | delete route 203.0.113.0/25: ESRCH', '']);
  });

  it('neighbours: NTF_USE with create makes an INCOMPLETE entry, without it ENOENT; the dump has the MAC', () => {
    expect(r.neighbours.missing).toBe('ENOENT | use neighbour 192.0.2.10: ENOENT');
    expect(r.neighbours.listed).toEqual([
      { ifindex: 3, dst: '192.0.2.2', lladdr: '020000000002', state: 0x80 },
      { ifindex: 3, dst: '192.0.2.9', state: 0x01 },
    ]);
  });

  it('requests and dumps in flight together on one socket each get their own answer', () => {
    const { oneByOne, together } = r.concurrent;
    expect(together).toEqual(oneByOne);
    // The answers differ from one another, so a crossed answer would show.
    expect(oneByOne[0]).toMatch(/^links .*\blo\b.*\brt0\b/);
    expect(oneByOne[1]).toMatch(/^addresses .*192\.0\.2\.1\/24/);
    expect(oneByOne[2]).toMatch(/^routes .*192\.0\.2\.0\/24/);
    expect(oneByOne[3]).toMatch(/^neighbours .*192\.0\.2\.2/);
    expect(oneByOne[4]).toMatch(/^route get oif [1-9]/);
  });

  it('hop-watch: a neighbour entry and a route added come as events (what the next-hop table refreshes on)', () => {
    expect(r.hopWatch.seen).toContain('neighbour rt0 192.0.2.99');
    expect(r.hopWatch.seen).toContain('route 203.0.113.64/26');
    expect(r.hopWatch.seen).not.toContain('lost');
  });

  it("link-watch's kept sysfs fd: the ifindex while the device lives, then NaN (ENODEV) after delete, even when the name is back", () => {
    expect(r.sysfs.first).toBe(r.sysfs.index);
    expect(r.sysfs.afterDelete).toBe('NaN');
    expect(r.sysfs.afterReAdd).toBe('NaN');
    expect(r.sysfs.missing).toBe(-1);
  });

  it('a multicast socket that overflows reports ENOBUFS once, and goes on receiving events', () => {
    expect(r.enobufs.errors).toEqual(['ENOBUFS netlink socket: ENOBUFS']);
    expect(r.enobufs.eventsAfter).toBe(r.enobufs.eventsBefore + 1);
  });
});
