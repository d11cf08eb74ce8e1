/**
 * `NextHops` over time (src/daemon/nexthop.ts): the next-hop table, `onChange` and the periodic
 * refresh, on the fake kernel of test/helpers/hop-kernel.ts (what one refresh does with each
 * route and neighbour entry: nexthop-refresh.test.ts). Flow of this file:
 *   1. `onChange` over several refreshes: called exactly when a peer's entry changes, and a peer
 *      back on the raw socket has its entry zeroed;
 *   2. `start` / `stop` on fake timers: one refresh before `start` resolves, then one every
 *      REFRESH_MS; `stop` ends them and waits for one under way.
 *
 * No device and no netlink socket: everything here is in-process.
 */
import { afterEach, beforeEach, describe, expect, test, vi } from 'vitest';
import { REFRESH_MS } from '../../src/daemon/nexthop.js';
import { hopEntry, readHop } from '../../src/dataplane/hops.js';
import { NUD } from '../../src/tun/netlink.js';
import { ETH0, ETH1, GW, H2, MAC_A, MAC_B, MAC_C, deferred, hops, kernel, mac, recordingLogger } from '../helpers/hop-kernel.js';

// ---------------------------------------------------------------- 1. onChange over refreshes

describe('NextHops: onChange and the table over several refreshes', () => {
  test('onChange(i) is called exactly when peer i’s entry changes', async () => {
    const k = kernel();
    k.neighbour(GW, NUD.REACHABLE, mac(MAC_C)); // peer 1 steady throughout
    const { log, lines } = recordingLogger();
    const { nh, changes } = hops(k, log);

    await nh.refresh(); // peer 0: none yet, peer 1: packet
    expect(changes).toEqual([1]);
    changes.length = 0;

    k.neighbour(H2, NUD.INCOMPLETE, undefined);
    await nh.refresh(); // raw -> raw, only the state differs: no change
    expect(changes).toEqual([]);

    k.neighbour(H2, NUD.REACHABLE, mac(MAC_A));
    await nh.refresh(); // raw -> packet
    expect(changes).toEqual([0]);
    expect(readHop(nh.table, 0)).toEqual([ETH0, MAC_A]);

    await nh.refresh(); // nothing changed
    k.neighbour(H2, NUD.DELAY, mac(MAC_A));
    await nh.refresh(); // the state differs, the entry does not
    expect(changes).toEqual([0]);

    k.neighbour(H2, NUD.REACHABLE, mac(MAC_B));
    await nh.refresh(); // MAC change
    expect(changes).toEqual([0, 0]);
    expect(readHop(nh.table, 0)).toEqual([ETH0, MAC_B]);

    k.routes.set(H2, { oif: ETH1, gateway: undefined });
    k.neighbour(H2, NUD.REACHABLE, mac(MAC_B), ETH1);
    await nh.refresh(); // ifindex change, same MAC
    expect(changes).toEqual([0, 0, 0]);
    expect(readHop(nh.table, 0)).toEqual([ETH1, MAC_B]);

    k.neighbour(H2, NUD.FAILED, mac(MAC_B), ETH1);
    await nh.refresh(); // packet -> raw
    expect(changes).toEqual([0, 0, 0, 0]);
    expect(readHop(nh.table, 0)).toBeNull();

    await nh.refresh(); // still raw
    expect(changes).toEqual([0, 0, 0, 0]);

    // One info line per change, naming the peer; the steady peer 1 logged once, at the start.
    const info = lines.filter((l) => l.level === 'info');
    expect(info.map((l) => l.obj.peer)).toEqual(['h3', 'h2', 'h2', 'h2', 'h2']);
    expect(info.at(-1)!.msg).toBe('peer sent through the raw socket');
    expect(info.at(-2)!.msg).toBe('peer sent through AF_PACKET');
  });

  test('a peer that goes back from packet to raw has all of its table entry zeroed and its MAC dropped from the status', async () => {
    const k = kernel();
    k.neighbour(H2, NUD.REACHABLE, mac('ff:ff:ff:ff:ff:ff'));
    k.neighbour(GW, NUD.REACHABLE, mac(MAC_B));
    const { nh, changes } = hops(k);
    await nh.refresh();
    expect(hopEntry(nh.table, 0)).toEqual([ETH0, -1, 0xffff0000 | 0]);
    k.entries = k.entries.filter((e) => e.dst !== H2);
    await nh.refresh();
    expect(hopEntry(nh.table, 0)).toEqual([0, 0, 0]);
    expect(nh.hopStatus(0)).toEqual({ send: 'raw', via: '192.0.2.2', ifindex: ETH0, state: 'no neighbour entry yet' });
    expect(changes).toEqual([0, 1, 0]);
    // Peer 1 kept its entry.
    expect(readHop(nh.table, 1)).toEqual([ETH0, MAC_B]);
  });

  test('a route that disappears takes a packet peer back to raw', async () => {
    const k = kernel();
    k.neighbour(H2, NUD.REACHABLE, mac(MAC_A));
    const { nh, changes } = hops(k);
    await nh.refresh();
    expect(changes).toEqual([0]);
    k.routes.delete(H2);
    await nh.refresh();
    expect(changes).toEqual([0, 0]);
    expect(hopEntry(nh.table, 0)).toEqual([0, 0, 0]);
    expect(nh.hopStatus(0).state).toMatch(/^no route/);
  });

  test('hopStatus returns a copy', async () => {
    const k = kernel();
    k.neighbour(H2, NUD.REACHABLE, mac(MAC_A));
    const { nh } = hops(k);
    await nh.refresh();
    const st = nh.hopStatus(0);
    st.send = 'raw';
    st.mac = 'x';
    expect(nh.hopStatus(0)).toMatchObject({ send: 'packet', mac: MAC_A });
  });
});

// ---------------------------------------------------------------- 2. start / stop

describe('NextHops.start / stop', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  test('REFRESH_MS is one second', () => {
    expect(REFRESH_MS).toBe(1000);
  });

  test('start refreshes once before it resolves, then every REFRESH_MS', async () => {
    const k = kernel();
    k.neighbour(H2, NUD.REACHABLE, mac(MAC_A));
    const { nh, changes } = hops(k);
    await nh.start();
    expect(k.neighbourCalls).toBe(1);
    expect(readHop(nh.table, 0)).toEqual([ETH0, MAC_A]);
    expect(changes).toEqual([0]);

    await vi.advanceTimersByTimeAsync(REFRESH_MS - 1);
    expect(k.neighbourCalls).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(k.neighbourCalls).toBe(2);
    await vi.advanceTimersByTimeAsync(3 * REFRESH_MS);
    expect(k.neighbourCalls).toBe(5);

    // A change in the kernel is picked up by the next periodic refresh.
    k.neighbour(H2, NUD.REACHABLE, mac(MAC_C));
    await vi.advanceTimersByTimeAsync(REFRESH_MS);
    expect(readHop(nh.table, 0)).toEqual([ETH0, MAC_C]);
    expect(changes).toEqual([0, 0]);
    await nh.stop();
  });

  test('stop ends the refreshes; the table keeps its last contents', async () => {
    const k = kernel();
    k.neighbour(H2, NUD.REACHABLE, mac(MAC_A));
    const { nh } = hops(k);
    await nh.start();
    await vi.advanceTimersByTimeAsync(REFRESH_MS);
    expect(k.neighbourCalls).toBe(2);
    await nh.stop();
    k.neighbour(H2, NUD.REACHABLE, mac(MAC_C));
    await vi.advanceTimersByTimeAsync(10 * REFRESH_MS);
    expect(k.neighbourCalls).toBe(2);
    expect(readHop(nh.table, 0)).toEqual([ETH0, MAC_A]);
    expect(vi.getTimerCount()).toBe(0);
  });

  test('a tick while a refresh is under way does not start another', async () => {
    const k = kernel();
    const { nh } = hops(k);
    await nh.start();
    const gate = deferred();
    k.gate = gate.promise;
    await vi.advanceTimersByTimeAsync(REFRESH_MS);
    expect(k.neighbourCalls).toBe(2);
    await vi.advanceTimersByTimeAsync(3 * REFRESH_MS);
    expect(k.neighbourCalls).toBe(2);
    gate.resolve();
    k.gate = null;
    await vi.advanceTimersByTimeAsync(REFRESH_MS);
    expect(k.neighbourCalls).toBe(3);
    await nh.stop();
  });

  test('stop waits for a refresh under way, which then looks up no further peer', async () => {
    const k = kernel();
    k.neighbour(H2, NUD.REACHABLE, mac(MAC_A));
    const { nh, changes } = hops(k);
    await nh.start();
    const routeCallsAfterStart = k.routeCalls.length;
    const gate = deferred();
    k.gate = gate.promise;
    await vi.advanceTimersByTimeAsync(REFRESH_MS); // the second refresh is now waiting for the dump
    expect(k.neighbourCalls).toBe(2);

    let stopped = false;
    const stopping = nh.stop().then(() => {
      stopped = true;
    });
    await vi.advanceTimersByTimeAsync(0);
    for (let i = 0; i < 10; i++) await Promise.resolve();
    expect(stopped).toBe(false);

    k.neighbour(H2, NUD.REACHABLE, mac(MAC_C));
    gate.resolve();
    await stopping;
    expect(stopped).toBe(true);
    expect(k.routeCalls.length).toBe(routeCallsAfterStart);
    expect(readHop(nh.table, 0)).toEqual([ETH0, MAC_A]);
    expect(changes).toEqual([0]);
    await vi.advanceTimersByTimeAsync(5 * REFRESH_MS);
    expect(k.neighbourCalls).toBe(2);
  });

  test('stop without start resolves and does nothing', async () => {
    const k = kernel();
    const { nh } = hops(k);
    await expect(nh.stop()).resolves.toBeUndefined();
    expect(vi.getTimerCount()).toBe(0);
    expect(k.neighbourCalls).toBe(0);
  });
});
