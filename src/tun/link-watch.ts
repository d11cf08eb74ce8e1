/**
 * Watching the TUN from outside: is our device still there, and what did the kernel drop at it?
 *
 * Flow, in the order of this file: `LinkWatch.start` opens an rtnetlink socket of its own
 * subscribed to link events (RTNLGRP_LINK) and calls `onGone` once when an RTM_DELLINK names
 * our ifindex (`ip link del ipip0`, or the namespace going away). Events the kernel could not
 * queue (a netlink socket that overflowed gets ENOBUFS, not the message) are made up for by
 * re-reading `/sys/class/net/<name>/ifindex` then (`check`); only without the subscription
 * (it could not be opened: `onNoEvents` hears why, once) is that read a timer's, every BACKSTOP_MS:
 * it runs on queue 0's thread, and even one pread costs ~0.1 ms there when it runs cold every
 * 2 s. `txDropped` reads the device's own `tx_dropped`: packets the kernel dropped because the
 * TUN's queue (`txqueuelen`) was full, that ipipd therefore never read (docs/performance.md,
 * "Latency: where the tail comes from": the only trace of them). `stop` closes it all.
 *
 * Both sysfs files are opened once and read again with one pread(2) at offset 0 (`readSysfs`),
 * which makes the kernel generate the value anew: this runs on queue 0's thread, between its
 * batches, and a path read costs an open, a read and a close (a synchronous readFileSync held a
 * batch up for 0.3-0.6 ms; an asynchronous readFile still ran 0.3 ms of callbacks on this
 * thread), a pread of a kept fd ~5 us. Once the device is deleted, the kept fd reads ENODEV,
 * also when a device of the same name comes back: the watch reports what it opened.
 *
 * A subscription needs a socket of its own (src/tun/nl-socket.ts); a message on it that does
 * not parse is skipped (it cannot be ours: an RTM_DELLINK of ours parses).
 */
import { closeSync, openSync, readSync } from 'node:fs';
import { NetlinkSocket } from './nl-socket.js';
import { decodeLink, RTM_DELLINK, RTNLGRP_LINK } from './rtnetlink.js';

/** How often the backstop re-reads sysfs. */
const BACKSTOP_MS = 2000;

const sysfsBuf = Buffer.alloc(32);

/** `/sys/class/net/<name>/<attr>` opened for `readSysfs`; -1 if it cannot be (no such device, no sysfs). */
export function openSysfs(name: string, attr: string): number {
  try {
    return openSync(`/sys/class/net/${name}/${attr}`, 'r');
  } catch {
    return -1;
  }
}

/** The number in an opened sysfs attribute, read anew; NaN if it cannot be read (ENODEV: the device is gone). */
export function readSysfs(fd: number): number {
  if (fd < 0) return NaN;
  try {
    const n = readSync(fd, sysfsBuf, 0, sysfsBuf.length, 0);
    return n > 0 ? Number(sysfsBuf.toString('latin1', 0, n)) : NaN;
  } catch {
    return NaN;
  }
}

export class LinkWatch {
  private sock: NetlinkSocket | undefined;
  private timer: NodeJS.Timeout | undefined;
  private gone = false;
  private stopped = false;
  private lastTxDropped = 0;
  private ifindexFd = -1;
  private txDroppedFd = -1;

  /**
   * `onGone(reason)` is called at most once, when device `name` (ifindex `index`) disappears;
   * `onNoEvents(why)` is called once if the subscription could not be opened (for the daemon's
   * log: the device is then watched by the backstop timer alone).
   */
  constructor(
    readonly name: string,
    readonly index: number,
    private readonly onGone: (reason: string) => void,
    private readonly onNoEvents?: (why: string) => void,
  ) {}

  /**
   * Subscribe to link events (sysfs checked again when events were lost); without the
   * subscription (it failed, or `events: false`), check sysfs every BACKSTOP_MS instead.
   */
  start(o: { events?: boolean } = {}): void {
    this.ifindexFd = openSysfs(this.name, 'ifindex');
    this.txDroppedFd = openSysfs(this.name, 'statistics/tx_dropped');
    if (o.events !== false) {
      try {
        this.sock = new NetlinkSocket({
          onEvent: (type, b, off, len) => {
            if (type === RTM_DELLINK && decodeLink(b, off, len).index === this.index) {
              this.lost(`rtnetlink: device ${this.name} (ifindex ${this.index}) was deleted`);
            }
          },
          // ENOBUFS: events were lost, ours among them perhaps (a message that does not parse is not ours).
          onError: (err) => {
            if (err.code !== 'EBADMSG') this.check();
          },
        });
        this.sock.join(RTNLGRP_LINK);
        return;
      } catch (err) {
        this.sock?.close();
        this.sock = undefined;
        this.onNoEvents?.(`${(err as Error).message}: no link events; reading /sys/class/net/${this.name}/ifindex every ${BACKSTOP_MS} ms instead`);
      }
    }
    this.timer = setInterval(() => this.check(), BACKSTOP_MS);
    this.timer.unref();
  }

  /** Is the device still there under its index? If not, report it (once). */
  check(): void {
    if (this.gone || this.stopped) return;
    if (readSysfs(this.ifindexFd) !== this.index) this.lost(`device ${this.name} (ifindex ${this.index}) is no longer in /sys/class/net`);
  }

  /** True once the device is known to be gone. */
  get isGone(): boolean {
    return this.gone;
  }

  /**
   * The device's `tx_dropped` (all queues): packets the kernel dropped at the TUN before ipipd
   * could read them. Once the device is gone, the last value read.
   */
  txDropped(): number {
    if (this.gone) return this.lastTxDropped;
    // Before start or after stop (the final counters): a read of its own, closed again.
    const fd = this.txDroppedFd >= 0 ? this.txDroppedFd : openSysfs(this.name, 'statistics/tx_dropped');
    const v = readSysfs(fd);
    if (fd !== this.txDroppedFd && fd >= 0) closeSync(fd);
    // Gone, or no sysfs here: the last value stands.
    if (Number.isFinite(v)) this.lastTxDropped = v;
    return this.lastTxDropped;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.sock?.close();
    this.sock = undefined;
    for (const fd of [this.ifindexFd, this.txDroppedFd]) if (fd >= 0) closeSync(fd);
    this.ifindexFd = this.txDroppedFd = -1;
  }

  private lost(reason: string): void {
    if (this.gone) return;
    this.gone = true;
    this.stop();
    this.onGone(reason);
  }
}
