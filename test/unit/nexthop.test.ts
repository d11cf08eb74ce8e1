/**
 * The next hops of `underlay.send: packet` (src/daemon/nexthop.ts): the shared next-hop table
 * the data path reads (`writeHop` / `readHop`) and `NextHops`, which fills it from the kernel's
 * route and neighbour tables. The kernel is a fake `HopSource` that records every call:
 *
 *   test --routes / neighbour entries--> FakeKernel <--routeGet / neighbours / useNeighbour-- NextHops
 *                                                                    table, hopStatus(i), onChange(i) --> test
 *
 * Flow of this file:
 *   1. `writeHop` / `readHop`: the layout (ifindex, MAC bytes 0-3 big-endian, MAC bytes 4-5 in the
 *      top 16 bits), round trips of MACs with the high bits set, peers independent of each other,
 *      and "none" (ifindex 0, no MAC, a MAC of the wrong length) zeroing all three int32s;
 *   2. `refresh`, which entry is used: the route's gateway or the endpoint itself, on the route's
 *      output interface only;
 *   3. `refresh`, each NUD state: used or not, and which entries are created (missing) or nudged
 *      (STALE) through `useNeighbour`;
 *   4. `refresh` when the kernel fails: no route, an unreadable neighbour table, a nudge refused;
 *   5. `onChange` over several refreshes: called exactly when a peer's entry changes, and a peer
 *      back on the raw socket has its entry zeroed;
 *   6. `start` / `stop` on fake timers: one refresh before `start` resolves, then one every
 *      REFRESH_MS; `stop` ends them and waits for one under way.
 *
 * No native addon and no netlink socket: everything here is in-process.
 */
import { Buffer } from 'node:buffer';
import { afterEach, beforeEach, describe, expect, test, vi } from 'vitest';
import { createLogger, type Logger } from '../../src/daemon/logger.js';
import { NextHops, REFRESH_MS, type HopSource } from '../../src/daemon/nexthop.js';
import { HOP_INTS, hopEntry, readHop, setHopEntry, writeHop } from '../../src/dataplane/hops.js';
import { NUD, type NeighbourInfo, type RouteLookup } from '../../src/tun/netlink.js';
import { ip } from '../helpers/packets.js';

// ---------------------------------------------------------------- helpers

/** "aa:bb:cc:dd:ee:ff" -> bytes. */
function mac(s: string): Buffer {
  return Buffer.from(s.split(':').join(''), 'hex');
}

/** A promise with its resolve and reject outside. */
function deferred(): { promise: Promise<void>; resolve: () => void; reject: (e: Error) => void } {
  let resolve!: () => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/**
 * The kernel's route and neighbour tables as NextHops sees them through `HopSource`. A route is
 * given per destination (a missing one rejects, as RTM_GETROUTE does with ENETUNREACH); every
 * call is recorded, `useNeighbour` with `create` as a boolean.
 */
class FakeKernel implements HopSource {
  routes = new Map<number, RouteLookup | Error>();
  entries: NeighbourInfo[] = [];
  /** When set, `neighbours()` rejects with it. */
  neighbourError: Error | null = null;
  /** When set, `useNeighbour()` rejects with it (after recording the call). */
  useError: Error | null = null;
  /** When set, `neighbours()` waits for it before answering. */
  gate: Promise<void> | null = null;
  routeCalls: [number, number][] = [];
  neighbourCalls = 0;
  useCalls: [number, number, boolean][] = [];

  async routeGet(dst: number, src: number): Promise<RouteLookup> {
    this.routeCalls.push([dst, src]);
    const r = this.routes.get(dst);
    if (r === undefined) throw new Error('ENETUNREACH');
    if (r instanceof Error) throw r;
    return { ...r };
  }

  async neighbours(): Promise<NeighbourInfo[]> {
    this.neighbourCalls++;
    if (this.gate !== null) await this.gate;
    if (this.neighbourError !== null) throw this.neighbourError;
    return this.entries.map((e) => ({ ...e }));
  }

  async useNeighbour(ifindex: number, dst: number, create?: boolean): Promise<void> {
    this.useCalls.push([ifindex, dst, create === true]);
    if (this.useError !== null) throw this.useError;
  }

  /** Replace the neighbour entry for (ifindex, dst), or add it. */
  neighbour(dst: number, state: number, lladdr: Buffer | undefined, ifindex = ETH0): void {
    this.entries = this.entries.filter((e) => !(e.ifindex === ifindex && e.dst === dst));
    this.entries.push({ ifindex, dst, lladdr, state });
  }
}

/** A logger that records what NextHops logs (info: a peer's entry changed; debug: still unusable). */
function recordingLogger(): { log: Logger; lines: { level: string; obj: Record<string, unknown>; msg: string }[] } {
  const lines: { level: string; obj: Record<string, unknown>; msg: string }[] = [];
  const at =
    (level: string) =>
    (obj: Record<string, unknown>, msg: string): void => {
      lines.push({ level, obj, msg });
    };
  const stub = { info: at('info'), debug: at('debug'), warn: at('warn'), error: at('error'), trace: at('trace'), fatal: at('fatal'), child: () => stub };
  return { log: stub as unknown as Logger, lines };
}

const ETH0 = 2;
const ETH1 = 3;
const LOCAL = ip('192.0.2.1');
/** Peer 0: on-link on eth0. */
const H2 = ip('192.0.2.2');
/** Peer 1: behind the gateway GW on eth0. */
const H3 = ip('198.51.100.7');
const GW = ip('192.0.2.254');
const MAC_A = 'ff:ee:dd:cc:bb:aa';
const MAC_B = '80:01:02:03:04:85';
const MAC_C = '02:00:00:00:00:01';

/** A kernel with both peers routed (H2 on-link, H3 via GW) and no neighbour entries yet. */
function kernel(): FakeKernel {
  const k = new FakeKernel();
  k.routes.set(H2, { oif: ETH0, gateway: undefined });
  k.routes.set(H3, { oif: ETH0, gateway: GW });
  return k;
}

/** NextHops over `k` for peers h2 (index 0) and h3 (index 1), recording onChange calls. */
function hops(k: FakeKernel, log: Logger = createLogger('silent')): { nh: NextHops; changes: number[] } {
  const changes: number[] = [];
  const nh = new NextHops(k, [H2, H3], ['h2', 'h3'], LOCAL, log, (i) => changes.push(i));
  return { nh, changes };
}

/** Peer i's three int32s. */
const ints = hopEntry;

// ---------------------------------------------------------------- 1. writeHop / readHop

describe('writeHop / readHop: the next-hop table', () => {
  test('HOP_INTS is 3, as native HOP_INTS', () => {
    expect(HOP_INTS).toBe(3);
  });

  test('the layout is ifindex, MAC bytes 0-3 big-endian, MAC bytes 4-5 in the top 16 bits', () => {
    const t = new Int32Array(HOP_INTS);
    writeHop(t, 0, 7, mac('ff:ee:dd:cc:bb:aa'));
    expect(ints(t, 0)).toEqual([7, 0xffeeddcc | 0, 0xbbaa0000 | 0]);
    writeHop(t, 0, 9, mac('01:02:03:04:05:06'));
    expect(ints(t, 0)).toEqual([9, 0x01020304, 0x05060000]);
  });

  // The top bit of bytes 0 and 4 is the sign bit of an int32: the bytes must come back unsigned.
  test.each(['ff:ff:ff:ff:ff:ff', 'ff:ee:dd:cc:bb:aa', '80:00:00:00:80:00', '80:01:02:03:04:85', '00:00:00:00:00:01', '7f:ff:ff:ff:7f:ff'])(
    'MAC %s survives the round trip',
    (m) => {
      const t = new Int32Array(HOP_INTS);
      writeHop(t, 0, 4, mac(m));
      expect(readHop(t, 0)).toEqual([4, m]);
    },
  );

  test('a fresh table has no entry', () => {
    const t = new Int32Array(3 * HOP_INTS);
    expect([readHop(t, 0), readHop(t, 1), readHop(t, 2)]).toEqual([null, null, null]);
  });

  test('the entries of several peers are independent', () => {
    const t = new Int32Array(3 * HOP_INTS);
    writeHop(t, 0, 2, mac(MAC_A));
    writeHop(t, 1, 3, mac(MAC_B));
    writeHop(t, 2, 4, mac(MAC_C));
    expect([readHop(t, 0), readHop(t, 1), readHop(t, 2)]).toEqual([
      [2, MAC_A],
      [3, MAC_B],
      [4, MAC_C],
    ]);
    // Rewriting and clearing the middle one leaves its neighbours alone.
    writeHop(t, 1, 5, mac(MAC_A));
    expect([readHop(t, 0), readHop(t, 1), readHop(t, 2)]).toEqual([
      [2, MAC_A],
      [5, MAC_A],
      [4, MAC_C],
    ]);
    writeHop(t, 1, 0, null);
    expect(ints(t, 1)).toEqual([0, 0, 0]);
    expect([readHop(t, 0), readHop(t, 1), readHop(t, 2)]).toEqual([[2, MAC_A], null, [4, MAC_C]]);
  });

  // ifindex 0 or below, or no MAC: all three int32s zeroed, not just the ifindex.
  test.each([
    ['ifindex 0 and no MAC', 0, null],
    ['no MAC', 2, null],
    ['ifindex 0 with a MAC', 0, mac(MAC_B)],
    ['a negative ifindex', -1, mac(MAC_B)],
  ])('writing none (%s) zeroes the entry', (_name, ifindex, m) => {
    const t = new Int32Array(HOP_INTS);
    writeHop(t, 0, 2, mac(MAC_A));
    writeHop(t, 0, ifindex, m);
    expect(ints(t, 0)).toEqual([0, 0, 0]);
    expect(readHop(t, 0)).toBeNull();
  });

  test.each([0, 5, 7, 8, 20])('a %i-byte MAC gives none', (len) => {
    const t = new Int32Array(HOP_INTS);
    writeHop(t, 0, 2, mac(MAC_A));
    writeHop(t, 0, 2, new Uint8Array(len).fill(0xab));
    expect(ints(t, 0)).toEqual([0, 0, 0]);
    expect(readHop(t, 0)).toBeNull();
  });
});

// ---------------------------------------------------------------- 2. which entry is used

describe('hopEntry / setHopEntry: one entry as a queue worker is sent it', () => {
  test('an entry copied into another table reads back the same, and only that peer changes', () => {
    const src = new Int32Array(3 * HOP_INTS);
    writeHop(src, 1, 9, mac('80:01:02:03:04:ff'));
    const dst = new Int32Array(3 * HOP_INTS);
    writeHop(dst, 0, 4, mac('02:00:00:00:00:01'));
    expect(setHopEntry(dst, 1, hopEntry(src, 1))).toBe(true);
    expect(readHop(dst, 1)).toEqual([9, '80:01:02:03:04:ff']);
    expect(readHop(dst, 0)).toEqual([4, '02:00:00:00:00:01']);
    expect(readHop(dst, 2)).toBeNull();
  });

  test.each([
    ['a short entry', 0, [1, 2]],
    ['a long entry', 0, [1, 2, 3, 4]],
    ['a negative peer', -1, [1, 2, 3]],
    ['a peer past the table', 3, [1, 2, 3]],
  ])('%s is refused and nothing is written', (_name, peer, entry) => {
    const t = new Int32Array(3 * HOP_INTS);
    writeHop(t, 0, 4, mac('02:00:00:00:00:01'));
    const before = Array.from(t);
    expect(setHopEntry(t, peer as number, entry as number[])).toBe(false);
    expect(Array.from(t)).toEqual(before);
  });
});

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

// ---------------------------------------------------------------- 3. NUD states

describe('NextHops.refresh: neighbour states', () => {
  test('no entry: raw, and the entry is created (useNeighbour with create)', async () => {
    const k = kernel();
    const { nh } = hops(k);
    await nh.refresh();
    expect(readHop(nh.table, 0)).toBeNull();
    expect(ints(nh.table, 0)).toEqual([0, 0, 0]);
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
    expect(ints(nh.table, 0)).toEqual([0, 0, 0]);
    expect(nh.hopStatus(0)).toEqual({ send: 'raw', via: '192.0.2.2', ifindex: ETH0, state: `${len}-byte link-layer address` });
    expect(k.useCalls.filter(([, dst]) => dst === H2)).toEqual([]);
  });
});

// ---------------------------------------------------------------- 4. the kernel failing

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
      expect(ints(nh.table, i)).toEqual([0, 0, 0]);
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

// ---------------------------------------------------------------- 5. onChange over refreshes

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
    expect(ints(nh.table, 0)).toEqual([ETH0, -1, 0xffff0000 | 0]);
    k.entries = k.entries.filter((e) => e.dst !== H2);
    await nh.refresh();
    expect(ints(nh.table, 0)).toEqual([0, 0, 0]);
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
    expect(ints(nh.table, 0)).toEqual([0, 0, 0]);
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

// ---------------------------------------------------------------- 6. start / stop

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
