/**
 * src/tun/link-watch.ts, the sysfs side: `check` re-reads the device's ifindex through an fd
 * opened at start (one pread, on queue 0's thread) and reports a device that is gone or
 * renumbered, once; with the rtnetlink subscription it runs only when events were lost, without
 * it (`events: false` here) every BACKSTOP_MS; a device still there is left alone; `txDropped` reads the
 * device's tx_dropped the same way; `stop` closes both fds, and a read after it opens and closes
 * its own. The interval is driven by fake timers; the sysfs reads are real (lo, and a name no
 * device has). That a kept fd reads ENODEV once its device is deleted, also when one of the
 * same name comes back: test/integration/rtnetlink.test.ts. A subscription that cannot be
 * opened (the test's own failure: the socket module is wrapped below) falls back to the
 * backstop and says why, once.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { LinkWatch } from '../../src/tun/link-watch.js';

/** While set, joining a netlink group fails with it (the socket itself opens for real). */
const joinFault = vi.hoisted(() => ({ err: null as Error | null }));

vi.mock('../../src/tun/nl-socket.js', async (importOriginal) => {
  const m = await importOriginal<typeof import('../../src/tun/nl-socket.js')>();
  class FaultySocket extends m.NetlinkSocket {
    override join(group: number): void {
      if (joinFault.err !== null) throw joinFault.err;
      super.join(group);
    }
  }
  return { ...m, NetlinkSocket: FaultySocket };
});

afterEach(() => {
  vi.useRealTimers();
  joinFault.err = null;
});

const openFds = (): number => readdirSync('/proc/self/fd').length;
const loIndex = (): number => Number(readFileSync('/sys/class/net/lo/ifindex', 'utf8'));

/** Starts a watch without the subscription, with setInterval faked, and fires its backstop `ticks` times. */
function watch(name: string, index: number, ticks: number): { w: LinkWatch; gone: string[] } {
  vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
  const gone: string[] = [];
  const w = new LinkWatch(name, index, (why) => gone.push(why));
  w.start({ events: false });
  vi.advanceTimersByTime(2000 * ticks);
  return { w, gone };
}

describe('LinkWatch backstop', () => {
  it('a device no longer in /sys/class/net is reported once, with its name and index', () => {
    const { w, gone } = watch('l15-nosuchdev', 4242, 3);
    expect(gone).toEqual(['device l15-nosuchdev (ifindex 4242) is no longer in /sys/class/net']);
    expect(w.isGone).toBe(true);
    w.stop();
  });

  it('a device that is still there under the same index is left alone', () => {
    const { w, gone } = watch('lo', loIndex(), 3);
    expect(gone).toEqual([]);
    w.stop();
  });

  it('a device renumbered (another ifindex under the name) is reported', () => {
    const { w, gone } = watch('lo', loIndex() + 1000, 1);
    expect(gone).toHaveLength(1);
    w.stop();
  });

  it('stop closes the fds it opened; a stopped watch reports nothing', () => {
    const before = openFds();
    const { w, gone } = watch('lo', loIndex() + 1000, 0);
    expect(openFds()).toBe(before + 2); // the ifindex and tx_dropped files
    w.stop();
    vi.advanceTimersByTime(10_000);
    expect(gone).toEqual([]);
    expect(openFds()).toBe(before);
  });
});

describe('LinkWatch with the rtnetlink subscription', () => {
  it('no timer at all: sysfs is read only when events were lost (check), which reports a device gone once', () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    const gone: string[] = [];
    const w = new LinkWatch('lo', loIndex() + 1000, (why) => gone.push(why));
    w.start();
    expect(vi.getTimerCount()).toBe(0);
    vi.advanceTimersByTime(60_000);
    expect(gone).toEqual([]);
    w.check();
    w.check();
    expect(gone).toHaveLength(1);
    w.stop();
  });

  it('a subscription that cannot be opened: said once, why, and the backstop reads sysfs every 2 s instead', () => {
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    joinFault.err = Object.assign(new Error('netlinkJoin: EPERM'), { code: 'EPERM' });
    const lines: string[] = [];
    const gone: string[] = [];
    const before = openFds();
    const w = new LinkWatch('lo', loIndex() + 1000, (why) => gone.push(why), (why) => lines.push(why));
    w.start();
    expect(lines).toEqual(['netlinkJoin: EPERM: no link events; reading /sys/class/net/lo/ifindex every 2000 ms instead']);
    expect(openFds()).toBe(before + 2); // the netlink socket closed again: only the sysfs files
    expect(vi.getTimerCount()).toBe(1);
    vi.advanceTimersByTime(2000);
    expect(gone).toHaveLength(1);
    expect(lines).toHaveLength(1);
    w.stop();
  });

  it('a device still there: check reports nothing; after stop, check reports nothing either', () => {
    const gone: string[] = [];
    const w = new LinkWatch('lo', loIndex(), (why) => gone.push(why));
    w.start();
    w.check();
    w.stop();
    w.check();
    expect(gone).toEqual([]);
  });
});

describe('LinkWatch.txDropped', () => {
  it("reads the device's tx_dropped, while started and after stop (with an fd of its own, closed again)", () => {
    const want = Number(readFileSync('/sys/class/net/lo/statistics/tx_dropped', 'utf8'));
    const { w } = watch('lo', loIndex(), 0);
    expect(w.txDropped()).toBe(want);
    w.stop();
    const before = openFds();
    expect(w.txDropped()).toBe(want);
    expect(openFds()).toBe(before);
  });

  it('a device that cannot be read gives the last value read (0 before any)', () => {
    const { w } = watch('l15-nosuchdev', 4242, 0);
    expect(w.txDropped()).toBe(0);
    w.stop();
  });
});
