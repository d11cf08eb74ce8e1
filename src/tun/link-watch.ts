/**
 * Watching the TUN from outside: is our device still there, and what did the kernel drop at it?
 *
 * Flow, in the order of this file: `LinkWatch.start` opens an rtnetlink socket of its own
 * subscribed to link events (RTNLGRP_LINK) and calls `onGone` once when an RTM_DELLINK names
 * our ifindex (`ip link del ipip0`, or the namespace going away); a slow timer re-reads
 * `/sys/class/net/<name>/ifindex` (asynchronously: this runs on queue 0's thread) as a backstop
 * for an event the kernel could not queue (a netlink socket that overflowed gets ENOBUFS, not
 * the message). `txDropped` reads the device's own `tx_dropped`: packets the kernel dropped
 * because the TUN's queue (`txqueuelen`) was full, that ipipd therefore never read (FINDINGS.md:
 * the only trace of them). `stop` closes it all.
 *
 * A subscription needs a socket of its own (src/tun/nl-socket.ts); a message on it that does
 * not parse is skipped (the backstop still stands).
 */
import { readFile, readFileSync } from 'node:fs';
import { NetlinkSocket } from './nl-socket.js';
import { decodeLink, RTM_DELLINK, RTNLGRP_LINK } from './rtnetlink.js';

/** How often the backstop re-reads sysfs. */
const BACKSTOP_MS = 2000;

export class LinkWatch {
  private sock: NetlinkSocket | undefined;
  private timer: NodeJS.Timeout | undefined;
  private gone = false;
  private lastTxDropped = 0;

  /** `onGone(reason)` is called at most once, when device `name` (ifindex `index`) disappears. */
  constructor(
    readonly name: string,
    readonly index: number,
    private readonly onGone: (reason: string) => void,
  ) {}

  /** Subscribe to link events and start the backstop. A failure to subscribe leaves the backstop alone. */
  start(): void {
    try {
      this.sock = new NetlinkSocket({
        onEvent: (type, b, off, len) => {
          if (type === RTM_DELLINK && decodeLink(b, off, len).index === this.index) {
            this.lost(`rtnetlink: device ${this.name} (ifindex ${this.index}) was deleted`);
          }
        },
      });
      this.sock.join(RTNLGRP_LINK);
    } catch {
      this.sock?.close();
      this.sock = undefined;
    }
    // Read off the thread (libuv's pool): this thread is queue 0's data path, and a synchronous
    // sysfs read here held a batch up for 0.3-0.6 ms every 2 s (docs/performance.md, "Latency:
    // where the tail comes from").
    this.timer = setInterval(() => {
      readFile(`/sys/class/net/${this.name}/ifindex`, 'utf8', (err, text) => {
        if (this.timer === undefined) return; // stopped meanwhile
        if ((err ? 0 : Number(text)) !== this.index) this.lost(`device ${this.name} (ifindex ${this.index}) is no longer in /sys/class/net`);
      });
    }, BACKSTOP_MS);
    this.timer.unref();
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
    try {
      const v = Number(readFileSync(`/sys/class/net/${this.name}/statistics/tx_dropped`, 'utf8'));
      if (Number.isFinite(v)) this.lastTxDropped = v;
    } catch {
      // gone, or no sysfs here: keep the last value
    }
    return this.lastTxDropped;
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.sock?.close();
    this.sock = undefined;
  }

  private lost(reason: string): void {
    if (this.gone) return;
    this.gone = true;
    this.stop();
    this.onGone(reason);
  }
}
