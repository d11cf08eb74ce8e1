/**
 * `NextHops` driven by the kernel's events (src/daemon/nexthop.ts, src/tun/hop-watch.ts): with
 * the subscription, a refresh when a next hop's neighbour entry or a route covering an endpoint
 * changed or events were lost, EVENT_DELAY_MS later and once per burst, never sooner than
 * REFRESH_MS after the previous refresh began, plus the BACKSTOP_MS backstop; without it (the subscription failed), polling every REFRESH_MS. The kernel is the
 * fake of test/helpers/hop-kernel.ts, which the test makes announce changes.
 *
 * No device and no netlink socket: everything here is in-process.
 */
import { afterEach, beforeEach, describe, expect, test, vi } from 'vitest';
import { BACKSTOP_MS, EVENT_DELAY_MS, REFRESH_MS } from '../../src/daemon/nexthop.js';
import { readHop } from '../../src/dataplane/hops.js';
import { NUD } from '../../src/tun/netlink.js';
import { ETH0, GW, H2, MAC_A, MAC_C, WatchingKernel, deferred, hops, kernel, mac, recordingLogger } from '../helpers/hop-kernel.js';
import { ip } from '../helpers/packets.js';

const watching = (): WatchingKernel => kernel(() => new WatchingKernel());
/** Past the REFRESH_MS after start's refresh, before which an event's refresh waits. */
const pastGap = (): Promise<unknown> => vi.advanceTimersByTimeAsync(REFRESH_MS);

describe('NextHops on the kernel\'s events', () => {
  beforeEach(() => void vi.useFakeTimers());
  afterEach(() => void vi.useRealTimers());

  test('the backstop is BACKSTOP_MS, not REFRESH_MS, once subscribed', async () => {
    expect(BACKSTOP_MS).toBeGreaterThanOrEqual(10 * REFRESH_MS);
    const k = watching();
    const { nh } = hops(k);
    await nh.start();
    expect(k.on).not.toBeNull();
    expect(k.neighbourCalls).toBe(1);
    await vi.advanceTimersByTimeAsync(BACKSTOP_MS - 1);
    expect(k.neighbourCalls).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(k.neighbourCalls).toBe(2);
    await nh.stop();
  });

  test("a next hop's neighbour entry changing: one refresh EVENT_DELAY_MS later, however many events", async () => {
    const k = watching();
    k.neighbour(H2, NUD.REACHABLE, mac(MAC_A));
    const { nh, changes } = hops(k);
    await nh.start();
    await pastGap();
    k.neighbour(H2, NUD.REACHABLE, mac(MAC_C)); // the peer's MAC changed
    for (let i = 0; i < 5; i++) k.on!.neighbour(ETH0, H2);
    k.on!.neighbour(ETH0, GW); // the other peer's gateway: the same refresh
    await vi.advanceTimersByTimeAsync(EVENT_DELAY_MS - 1);
    expect(k.neighbourCalls).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(k.neighbourCalls).toBe(2);
    expect(readHop(nh.table, 0)).toEqual([ETH0, MAC_C]);
    expect(changes).toEqual([0, 0]);
    await vi.advanceTimersByTimeAsync(10 * EVENT_DELAY_MS);
    expect(k.neighbourCalls).toBe(2);
    await nh.stop();
  });

  test('events never make refreshes more often than one per REFRESH_MS (a large mesh going STALE all the time)', async () => {
    const k = watching();
    const { nh } = hops(k);
    await nh.start();
    k.on!.neighbour(ETH0, H2); // right after start's refresh: waits for REFRESH_MS after it
    await vi.advanceTimersByTimeAsync(REFRESH_MS - 1);
    expect(k.neighbourCalls).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(k.neighbourCalls).toBe(2);
    for (let t = 0; t < 5000; t += 50) {
      k.on!.neighbour(ETH0, H2);
      await vi.advanceTimersByTimeAsync(50);
    }
    expect(k.neighbourCalls).toBeGreaterThanOrEqual(6);
    expect(k.neighbourCalls).toBeLessThanOrEqual(7); // 5 s of events: one refresh a second
    await nh.stop();
  });

  test('a neighbour that is no next hop changes nothing', async () => {
    const k = watching();
    const { nh } = hops(k);
    await nh.start();
    k.on!.neighbour(ETH0, ip('192.0.2.77'));
    await vi.advanceTimersByTimeAsync(BACKSTOP_MS - 1);
    expect(k.neighbourCalls).toBe(1);
    await nh.stop();
  });

  test('a route covering an endpoint (or the default route) changing: a refresh; other routes: none', async () => {
    const k = watching();
    const { nh } = hops(k);
    await nh.start();
    await pastGap();
    k.on!.route(ip('203.0.113.0'), 24); // covers no endpoint
    k.on!.route(ip('192.0.2.0'), 25); // covers h2's endpoint
    await vi.advanceTimersByTimeAsync(EVENT_DELAY_MS);
    expect(k.neighbourCalls).toBe(2);
    await pastGap();
    k.on!.route(ip('203.0.113.0'), 24);
    await vi.advanceTimersByTimeAsync(10 * EVENT_DELAY_MS);
    expect(k.neighbourCalls).toBe(2);
    k.on!.route(0, 0); // the default route covers every endpoint
    await vi.advanceTimersByTimeAsync(EVENT_DELAY_MS);
    expect(k.neighbourCalls).toBe(3);
    await pastGap();
    k.on!.route(ip('198.51.100.7'), 32); // h3's host route
    await vi.advanceTimersByTimeAsync(EVENT_DELAY_MS);
    expect(k.neighbourCalls).toBe(4);
    await nh.stop();
  });

  test('events lost (ENOBUFS): a refresh', async () => {
    const k = watching();
    const { nh } = hops(k);
    await nh.start();
    await pastGap();
    k.on!.lost();
    await vi.advanceTimersByTimeAsync(EVENT_DELAY_MS);
    expect(k.neighbourCalls).toBe(2);
    await nh.stop();
  });

  test('an event while a refresh runs: one more refresh after it (it may have read the table before the change)', async () => {
    const k = watching();
    k.neighbour(H2, NUD.STALE, mac(MAC_A));
    const { nh } = hops(k);
    await nh.start();
    await pastGap();
    const gate = deferred();
    k.gate = gate.promise;
    k.on!.neighbour(ETH0, H2);
    await vi.advanceTimersByTimeAsync(EVENT_DELAY_MS); // refresh 2 waits for its dump
    expect(k.neighbourCalls).toBe(2);
    k.on!.neighbour(ETH0, H2);
    k.on!.neighbour(ETH0, H2);
    await vi.advanceTimersByTimeAsync(EVENT_DELAY_MS);
    expect(k.neighbourCalls).toBe(2);
    k.gate = null;
    gate.resolve();
    await pastGap();
    expect(k.neighbourCalls).toBe(3); // exactly one more, REFRESH_MS after refresh 2 began
    await pastGap();
    expect(k.neighbourCalls).toBe(3);
    await nh.stop();
  });

  test('subscribed before the first refresh: an event during it makes one more refresh after it', async () => {
    const k = watching();
    const gate = deferred();
    k.gate = gate.promise;
    const { nh } = hops(k);
    const starting = nh.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(k.on).not.toBeNull();
    expect(k.neighbourCalls).toBe(1);
    k.neighbour(H2, NUD.REACHABLE, mac(MAC_A)); // resolved while the first refresh runs
    k.on!.neighbour(ETH0, H2);
    await vi.advanceTimersByTimeAsync(EVENT_DELAY_MS);
    expect(k.neighbourCalls).toBe(1); // not a second refresh beside the first
    k.gate = null;
    gate.resolve();
    await starting;
    await pastGap();
    expect(k.neighbourCalls).toBe(2);
    expect(readHop(nh.table, 0)).toEqual([ETH0, MAC_A]);
    await nh.stop();
  });

  test('stop closes the subscription and leaves no timer, an event due included', async () => {
    const k = watching();
    const { nh } = hops(k);
    await nh.start();
    k.on!.lost();
    await nh.stop();
    expect(k.closed).toBe(1);
    expect(vi.getTimerCount()).toBe(0);
    k.on!.lost(); // a late event: nothing
    await vi.advanceTimersByTimeAsync(BACKSTOP_MS);
    expect(k.neighbourCalls).toBe(1);
  });

  test('no subscription (it failed): a warning, and the tables read every REFRESH_MS', async () => {
    const k = watching();
    k.watchError = new Error('EPERM');
    const { log, lines } = recordingLogger();
    const { nh } = hops(k, log);
    await nh.start();
    expect(lines.filter((l) => l.level === 'warn').map((l) => l.obj.err)).toEqual(['EPERM']);
    await vi.advanceTimersByTimeAsync(3 * REFRESH_MS);
    expect(k.neighbourCalls).toBe(4);
    await nh.stop();
  });
});
