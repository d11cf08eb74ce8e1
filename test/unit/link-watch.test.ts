/**
 * src/tun/link-watch.ts, the sysfs backstop: every BACKSTOP_MS it re-reads the device's ifindex
 * (asynchronously, off queue 0's thread) and reports a device that is gone or renumbered, once;
 * a device that is still there is left alone, and a stopped watch reports nothing.
 * The interval is driven by fake timers; the sysfs read itself is real.
 */
import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { LinkWatch } from '../../src/tun/link-watch.js';

afterEach(() => {
  vi.useRealTimers();
});

/** Starts a watch with setInterval faked, fires its backstop once, and gives the read time to land. */
async function tickOnce(name: string, index: number, stopFirst = false): Promise<string[]> {
  vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
  const gone: string[] = [];
  const w = new LinkWatch(name, index, (why) => gone.push(why));
  w.start();
  vi.advanceTimersByTime(2000);
  if (stopFirst) w.stop();
  // The read runs in libuv's pool: wait for a read of the same kind to complete after it.
  await new Promise<void>((r) => setTimeout(r, 50));
  await import('node:fs/promises').then((fs) => fs.readFile('/sys/class/net/lo/ifindex', 'utf8').catch(() => ''));
  w.stop();
  return gone;
}

describe('LinkWatch backstop', () => {
  it('a device no longer in /sys/class/net is reported once, with its name and index', async () => {
    const gone = await tickOnce('l15-nosuchdev', 4242);
    expect(gone).toEqual(['device l15-nosuchdev (ifindex 4242) is no longer in /sys/class/net']);
  });

  it('a device that is still there under the same index is left alone', async () => {
    const lo = Number(readFileSync('/sys/class/net/lo/ifindex', 'utf8'));
    expect(await tickOnce('lo', lo)).toEqual([]);
  });

  it('a read that completes after stop() reports nothing', async () => {
    expect(await tickOnce('l15-nosuchdev', 4242, true)).toEqual([]);
  });
});
