/**
 * `NextHops.refresh` (src/daemon/nexthop.ts): how one refresh fills each peer's entry of the
 * next-hop table from the kernel's route and neighbour tables. The kernel is a fake `HopSource`
 * that records every call (test/helpers/hop-kernel.ts):
 *
 *   test --routes / neighbour entries--> FakeKernel <--routeGet / neighbours / useNeighbour-- NextHops
 *                                                                    table, hopStatus(i), onChange(i) --> test
 *
 * Flow of this file:
 *   1. which entry is used: the route's gateway or the endpoint itself, on the route's output
 *      interface only;
 *   2. each NUD state: used or not, and which entries are created (missing) or nudged (STALE)
 *      through `useNeighbour`;
 *   3. the kernel failing: no route, an unreadable neighbour table, a nudge refused.
 * (What happens over several refreshes, and the timer: nexthop.test.ts.)
 *
 * No device and no netlink socket: everything here is in-process.
 */
import { Buffer } from 'node:buffer';
import { describe, expect, test } from 'vitest';
import { HOP_INTS, hopEntry, readHop } from '../../src/dataplane/hops.js';
import { NUD } from '../../src/tun/netlink.js';
import { ETH0, ETH1, GW, H2, H3, LOCAL, MAC_A, MAC_B, MAC_C, hops, kernel, mac } from '../helpers/hop-kernel.js';

// ---------------------------------------------------------------- 1. which entry is used

describe('NextHops.refresh: which neighbour entry is used', () => {
  test('before the first refresh every peer is raw, not looked up yet', () => {
    const { nh } = hops(kernel());
    expect(nh.table).toHaveLength(2 * HOP_INTS);
    expect(nh.hopStatus(0)).toEqual({ send: 'raw', state: 'not looked up yet' });
    expect(nh.hopStatus(1)).toEqual({ send: 'raw', state: 'not looked up yet' });
  });

  test('an on-link endpoint with a REACHABLE entry on the route oif goes through AF_PACKET to its MAC', async () => {
    const k = kernel();
    k.neighbour(H2, NUD.REACHABLE, mac(MAC_A));
    const { nh } = hops(k);
    await nh.refresh();
    expect(readHop(nh.table, 0)).toEqual([ETH0, MAC_A]);
    expect(nh.hopStatus(0)).toEqual({ send: 'packet', via: '192.0.2.2', ifindex: ETH0, mac: MAC_A, state: 'reachable' });
    // The route is asked for from our underlay address, once per peer; one neighbour dump.
    expect(k.routeCalls).toEqual([
      [H2, LOCAL],
      [H3, LOCAL],
    ]);
    expect(k.neighbourCalls).toBe(1);
    // A REACHABLE entry is neither created nor nudged (the gateway's missing one is created).
    expect(k.useCalls).toEqual([[ETH0, GW, true]]);
  });

  test("behind a gateway, the gateway's entry is used, not the endpoint's", async () => {
    const k = kernel();
    k.neighbour(H3, NUD.REACHABLE, mac(MAC_A)); // the endpoint's own entry: must be ignored
    k.neighbour(GW, NUD.REACHABLE, mac(MAC_B));
    const { nh } = hops(k);
    await nh.refresh();
    expect(readHop(nh.table, 1)).toEqual([ETH0, MAC_B]);
    expect(nh.hopStatus(1)).toEqual({ send: 'packet', via: '192.0.2.254', ifindex: ETH0, mac: MAC_B, state: 'reachable' });
  });

  test("behind a gateway with only the endpoint's entry, the peer stays raw and the gateway's entry is created", async () => {
    const k = kernel();
    k.neighbour(H3, NUD.REACHABLE, mac(MAC_A));
    const { nh } = hops(k);
    await nh.refresh();
    expect(readHop(nh.table, 1)).toBeNull();
    expect(nh.hopStatus(1)).toMatchObject({ send: 'raw', via: '192.0.2.254', ifindex: ETH0 });
    expect(k.useCalls).toContainEqual([ETH0, GW, true]);
    expect(k.useCalls).not.toContainEqual(expect.arrayContaining([H3]));
  });

  test('an entry for the right address on another interface is not used', async () => {
    const k = kernel();
    k.neighbour(H2, NUD.REACHABLE, mac(MAC_A), ETH1);
    const { nh } = hops(k);
    await nh.refresh();
    expect(readHop(nh.table, 0)).toBeNull();
    expect(nh.hopStatus(0)).toEqual({ send: 'raw', via: '192.0.2.2', ifindex: ETH0, state: 'no neighbour entry yet' });
    // Missing on the route's interface: created there.
    expect(k.useCalls).toContainEqual([ETH0, H2, true]);
  });

  test('the entry on the route oif is used when the address has entries on several interfaces', async () => {
    const k = kernel();
    k.routes.set(H2, { oif: ETH1, gateway: undefined });
    k.neighbour(H2, NUD.REACHABLE, mac(MAC_A), ETH0);
    k.neighbour(H2, NUD.REACHABLE, mac(MAC_C), ETH1);
    const { nh } = hops(k);
    await nh.refresh();
    expect(readHop(nh.table, 0)).toEqual([ETH1, MAC_C]);
  });
});

// ---------------------------------------------------------------- 2. NUD states

describe('NextHops.refresh: neighbour states', () => {
  test('no entry: raw, and the entry is created (useNeighbour with create)', async () => {
    const k = kernel();
    const { nh } = hops(k);
    await nh.refresh();
    expect(readHop(nh.table, 0)).toBeNull();
    expect(hopEntry(nh.table, 0)).toEqual([0, 0, 0]);
    expect(nh.hopStatus(0)).toEqual({ send: 'raw', via: '192.0.2.2', ifindex: ETH0, state: 'no neighbour entry yet' });
    expect(k.useCalls).toEqual([
      [ETH0, H2, true],
      [ETH0, GW, true],
    ]);
  });

  // Being resolved, or resolution failed: the raw socket's traffic drives the kernel; no nudge.
  // A MAC left on a FAILED entry is not used.
  test.each([
    ['INCOMPLETE', NUD.INCOMPLETE, undefined, 'incomplete'],
    ['FAILED', NUD.FAILED, mac(MAC_A), 'failed'],
    ['no state bit (0)', 0, mac(MAC_A), 'none'],
    // Unresolved comes first: the state is named, not the address length.
    ['no state bit (0), with a 20-byte address', 0, Buffer.alloc(20, 0xab), 'none'],
  ])('%s: raw, without creating or nudging the entry', async (_name, state, lladdr, name) => {
    const k = kernel();
    k.neighbour(H2, state, lladdr);
    k.neighbour(GW, NUD.REACHABLE, mac(MAC_B));
    const { nh } = hops(k);
    await nh.refresh();
    expect(readHop(nh.table, 0)).toBeNull();
    expect(nh.hopStatus(0)).toEqual({ send: 'raw', via: '192.0.2.2', ifindex: ETH0, state: name });
    expect(k.useCalls).toEqual([]);
  });

  test('STALE: packet, and the entry is nudged (useNeighbour without create)', async () => {
    const k = kernel();
    k.neighbour(H2, NUD.STALE, mac(MAC_A));
    k.neighbour(GW, NUD.REACHABLE, mac(MAC_B));
    const { nh } = hops(k);
    await nh.refresh();
    expect(readHop(nh.table, 0)).toEqual([ETH0, MAC_A]);
    expect(nh.hopStatus(0)).toEqual({ send: 'packet', via: '192.0.2.2', ifindex: ETH0, mac: MAC_A, state: 'stale' });
    expect(k.useCalls).toEqual([[ETH0, H2, false]]);
  });

  test.each([
    ['REACHABLE', NUD.REACHABLE, 'reachable'],
    ['DELAY', NUD.DELAY, 'delay'],
    ['PROBE', NUD.PROBE, 'probe'],
    ['PERMANENT', NUD.PERMANENT, 'permanent'],
    ['NOARP with a 6-byte address', NUD.NOARP, 'noarp'],
  ])('%s: packet, no nudge', async (_name, state, name) => {
    const k = kernel();
    k.neighbour(H2, state, mac(MAC_B));
    k.neighbour(GW, NUD.REACHABLE, mac(MAC_A));
    const { nh } = hops(k);
    await nh.refresh();
    expect(readHop(nh.table, 0)).toEqual([ETH0, MAC_B]);
    expect(nh.hopStatus(0)).toEqual({ send: 'packet', via: '192.0.2.2', ifindex: ETH0, mac: MAC_B, state: name });
    expect(k.useCalls).toEqual([]);
  });

  test('NOARP without a link-layer address: raw', async () => {
    const k = kernel();
    k.neighbour(H2, NUD.NOARP, undefined);
    const { nh } = hops(k);
    await nh.refresh();
    expect(readHop(nh.table, 0)).toBeNull();
    expect(nh.hopStatus(0)).toEqual({ send: 'raw', via: '192.0.2.2', ifindex: ETH0, state: 'noarp' });
    expect(k.useCalls.filter(([, dst]) => dst === H2)).toEqual([]);
  });

  test.each([0, 4, 16, 20])('a %i-byte link-layer address: raw, and the state says so', async (len) => {
    const k = kernel();
    k.neighbour(H2, NUD.REACHABLE, Buffer.alloc(len, 0xab));
    const { nh } = hops(k);
    await nh.refresh();
    expect(readHop(nh.table, 0)).toBeNull();
    expect(hopEntry(nh.table, 0)).toEqual([0, 0, 0]);
    expect(nh.hopStatus(0)).toEqual({ send: 'raw', via: '192.0.2.2', ifindex: ETH0, state: `${len}-byte link-layer address` });
    expect(k.useCalls.filter(([, dst]) => dst === H2)).toEqual([]);
  });
});

// ---------------------------------------------------------------- 3. the kernel failing

describe('NextHops.refresh: lookups that fail', () => {
  test("a route lookup that rejects: that peer raw, 'no route: ...'; the other peer unaffected", async () => {
    const k = kernel();
    k.routes.set(H2, new Error('ENETUNREACH: route get 192.0.2.2'));
    k.neighbour(H2, NUD.REACHABLE, mac(MAC_A));
    k.neighbour(GW, NUD.REACHABLE, mac(MAC_B));
    const { nh } = hops(k);
    await nh.refresh();
    expect(readHop(nh.table, 0)).toBeNull();
    const st = nh.hopStatus(0);
    expect(st.send).toBe('raw');
    expect(st.state.startsWith('no route')).toBe(true);
    expect(st.state).toContain('ENETUNREACH: route get 192.0.2.2');
    expect(readHop(nh.table, 1)).toEqual([ETH0, MAC_B]);
    expect(k.useCalls).toEqual([]);
  });

  test('a neighbour table that cannot be read: every peer raw, entries zeroed, the state says why', async () => {
    const k = kernel();
    k.neighbour(H2, NUD.REACHABLE, mac(MAC_A));
    k.neighbour(GW, NUD.REACHABLE, mac(MAC_B));
    const { nh, changes } = hops(k);
    await nh.refresh();
    expect(changes).toEqual([0, 1]);
    k.neighbourError = new Error('EBUSY: list neighbours');
    await expect(nh.refresh()).resolves.toBeUndefined();
    for (const i of [0, 1]) {
      expect(hopEntry(nh.table, i)).toEqual([0, 0, 0]);
      const st = nh.hopStatus(i);
      expect(st.send).toBe('raw');
      expect(st.mac).toBeUndefined();
      expect(st.state).toMatch(/neighbour table/);
      expect(st.state).toContain('EBUSY: list neighbours');
    }
    expect(changes).toEqual([0, 1, 0, 1]);
  });

  test('a rejected useNeighbour does not make refresh throw (missing entry and STALE entry)', async () => {
    const k = kernel();
    k.useError = new Error('ENOENT: use neighbour');
    k.neighbour(GW, NUD.STALE, mac(MAC_B));
    const { nh } = hops(k);
    await expect(nh.refresh()).resolves.toBeUndefined();
    // Both nudges were tried and refused; each peer's result is as without the failure.
    expect(k.useCalls).toEqual([
      [ETH0, H2, true],
      [ETH0, GW, false],
    ]);
    expect(nh.hopStatus(0)).toMatchObject({ send: 'raw', state: 'no neighbour entry yet' });
    expect(nh.hopStatus(1)).toMatchObject({ send: 'packet', mac: MAC_B, state: 'stale' });
    expect(readHop(nh.table, 1)).toEqual([ETH0, MAC_B]);
  });
});
