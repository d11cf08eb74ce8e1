/**
 * One rtnetlink socket: the addon opens it and reads it (native `openNetlink`, a READER_NETLINK
 * Reader on the event loop), and this module does the protocol (RFC 3549 §2.3.2), with the
 * messages themselves built and parsed in src/tun/rtnetlink.ts.
 *
 * Flow, in the order of this file: `NetlinkError` (what every failure is: the errno's name in
 * `code`, as the addon's errors); `NetlinkSocket`: open; `request` numbers a request (nlmsg_seq),
 * sends it and waits for its replies: each message of ours with that seq goes to the request's
 * `onReply` until NLMSG_DONE (a dump) or NLMSG_ERROR (an error, or with errno 0 the ACK every
 * other request asks for), or fails with ETIMEDOUT after its timeout; one dump at a time (the
 * kernel runs one per socket), the others wait their turn. `onBatch` walks each datagram the
 * Reader delivers: a message whose nlmsg_pid is our port and whose seq is pending is a reply;
 * anything else (a multicast event) goes to `onEvent`. What does not parse, or makes `onEvent`
 * throw, is reported to `onError` with code EBADMSG and skipped; a socket error (ENOBUFS: events
 * were lost) is reported with its own code. Nothing escapes the Reader's callback. `close`.
 */
import { Buffer } from 'node:buffer';
import { constants } from 'node:os';
import { errnoLabel, native, READER_NETLINK, type NativeError, type NativeReader } from './native.js';
import {
  checkMessage,
  decodeDone,
  decodeError,
  msgFlags,
  msgPid,
  msgSeq,
  msgType,
  NLM_F_DUMP,
  NLMSG_DONE,
  NLMSG_ERROR,
  NLMSG_NOOP,
  NLMSG_OVERRUN,
  setSeq,
} from './rtnetlink.js';

/** The kernel sends dump datagrams of at most 32 KiB (netlink_recvmsg's cap of max_recvmsg_len). */
const SLOT = 32 << 10;
const BATCH = 4;

/** An rtnetlink failure: `code` the errno's name ('EEXIST', 'ETIMEDOUT', 'EBADMSG' ...), `op` what was asked. */
export class NetlinkError extends Error {
  readonly code: string;
  readonly errno: number;
  readonly op: string;
  constructor(op: string, errno: number, detail?: string, code = errnoLabel(errno)) {
    super(`${op}: ${code}${detail ? ` (${detail})` : ''}`);
    this.name = 'NetlinkError';
    this.code = code;
    this.errno = errno;
    this.op = op;
  }

  /** The error of errno name `code` ('ETIMEDOUT' ...). */
  static of(op: string, code: string, detail?: string): NetlinkError {
    return new NetlinkError(op, (constants.errno as Record<string, number>)[code] ?? 0, detail, code);
  }
}

const failure = NetlinkError.of;

/** Called with each message of a reply (not the ACK or DONE); may throw MalformedMessage. */
export type ReplyHandler = (type: number, b: Buffer, off: number, len: number) => void;

export interface NetlinkHandlers {
  /** A message that is no reply of ours (a multicast event). May throw: counted as EBADMSG. */
  onEvent?(type: number, b: Buffer, off: number, len: number): void;
  /** After the events of one wake-up were handed to `onEvent` (to deliver them as one batch). */
  onEventsEnd?(): void;
  /** A socket error (ENOBUFS: events were lost) or a message that does not parse (EBADMSG). */
  onError?(err: NetlinkError): void;
}

interface Pending {
  readonly op: string;
  readonly onReply: ReplyHandler | undefined;
  readonly settle: (err: NetlinkError | undefined) => void;
  /** The first reply that did not parse: the request fails with it once complete. */
  bad: NetlinkError | undefined;
}

export class NetlinkSocket {
  private readonly fd: number;
  private readonly port: number;
  private readonly reader: NativeReader;
  private readonly slab = Buffer.alloc(SLOT * BATCH);
  private readonly lens = new Int32Array(BATCH);
  private readonly pending = new Map<number, Pending>();
  private seq = 0;
  /** While a dump runs: the dumps waiting for it to end, first in first out; null when none runs. */
  private dumpWaiting: Array<() => void> | null = null;
  private closed = false;
  private events = 0;

  /** Opens the socket (throws a NativeError); `rcvbuf` bytes of receive buffer, 0 the default. */
  constructor(private readonly h: NetlinkHandlers = {}, rcvbuf = 0) {
    const { fd, port } = native.openNetlink(rcvbuf);
    this.fd = fd;
    this.port = port;
    let reader: NativeReader | undefined;
    try {
      reader = new native.Reader(fd, READER_NETLINK, this.slab, this.lens, SLOT, 0, BATCH, (n) => this.onBatch(n), (err) => this.onSocketError(err));
      reader.start();
    } catch (err) {
      reader?.close();
      native.close(fd);
      throw err;
    }
    this.reader = reader;
  }

  /** Join multicast group `group` (RTNLGRP_*): its events go to `onEvent` from now on. */
  join(group: number): void {
    native.netlinkJoin(this.fd, group);
  }

  /**
   * Send `msg` (one request from src/tun/rtnetlink.ts; its seq is set here) and resolve once the
   * kernel has answered it whole. A dump waits for the socket's dump before it. Rejects with a
   * NetlinkError: the kernel's errno, ETIMEDOUT after `timeoutMs`, EBADMSG for a reply that did
   * not parse, ECANCELED if the socket is closed first.
   */
  request(op: string, msg: Buffer, onReply: ReplyHandler | undefined, timeoutMs: number): Promise<void> {
    if ((msgFlags(msg, 0) & NLM_F_DUMP) !== NLM_F_DUMP) return this.exchange(op, msg, onReply, timeoutMs);
    let mine: Promise<void>;
    if (this.dumpWaiting === null) {
      // None running: send now (synchronously, as every other request).
      this.dumpWaiting = [];
      mine = this.exchange(op, msg, onReply, timeoutMs);
    } else {
      const waiting = this.dumpWaiting;
      mine = new Promise<void>((resolve) => waiting.push(resolve)).then(() => this.exchange(op, msg, onReply, timeoutMs));
    }
    return mine.finally(() => {
      const next = this.dumpWaiting?.shift();
      if (next) next();
      else this.dumpWaiting = null;
    });
  }

  /** Stop reading and close the fd; requests still waiting fail with ECANCELED. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.reader.close();
    native.close(this.fd);
    for (const p of [...this.pending.values()]) p.settle(failure(p.op, 'ECANCELED', 'socket closed'));
  }

  private exchange(op: string, msg: Buffer, onReply: ReplyHandler | undefined, timeoutMs: number): Promise<void> {
    if (this.closed) return Promise.reject(failure(op, 'ECANCELED', 'socket closed'));
    do this.seq = (this.seq + 1) >>> 0;
    while (this.seq === 0 || this.pending.has(this.seq));
    const seq = this.seq;
    setSeq(msg, 0, seq);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => p.settle(failure(op, 'ETIMEDOUT', `no answer within ${timeoutMs} ms`)), timeoutMs);
      const p: Pending = {
        op,
        onReply,
        bad: undefined,
        settle: (err) => {
          clearTimeout(timer);
          this.pending.delete(seq);
          if (err) reject(err);
          else resolve();
        },
      };
      this.pending.set(seq, p);
      try {
        native.netlinkSend(this.fd, msg);
      } catch (err) {
        const e = err as NativeError;
        p.settle(new NetlinkError(op, e.errno ?? 0, undefined, e.code ?? 'EUNKNOWN'));
      }
    });
  }

  /** The Reader's callback: datagrams in slots 0..n-1. Never throws. */
  private onBatch(n: number): void {
    for (let i = 0; i < n && !this.closed; i++) {
      const len = this.lens[i]!;
      const off = i * SLOT;
      if (len === -2) this.invalid('a datagram not sent by the kernel');
      else if (len < 0) this.truncated(off);
      else this.datagram(off, off + len);
    }
    if (this.events === 0 || this.h.onEventsEnd === undefined) return;
    this.events = 0;
    try {
      this.h.onEventsEnd();
    } catch (err) {
      this.invalid(err instanceof Error ? err.message : String(err));
    }
  }

  private datagram(off: number, end: number): void {
    const b = this.slab;
    while (off < end && !this.closed) {
      let len: number;
      try {
        len = checkMessage(b, off, end);
      } catch (err) {
        this.invalid((err as Error).message);
        return; // the framing is lost: the rest of the datagram cannot be found
      }
      const p = msgPid(b, off) === this.port ? this.pending.get(msgSeq(b, off)) : undefined;
      if (p !== undefined) this.reply(p, off, len);
      else if (this.h.onEvent !== undefined) {
        try {
          this.events++;
          this.h.onEvent(msgType(b, off), b, off, len);
        } catch (err) {
          this.invalid(err instanceof Error ? err.message : String(err));
        }
      }
      off += (len + 3) & ~3;
    }
  }

  private reply(p: Pending, off: number, len: number): void {
    const b = this.slab;
    try {
      const type = msgType(b, off);
      if (type === NLMSG_ERROR) {
        const e = decodeError(b, off, len);
        p.settle(e.errno !== 0 ? new NetlinkError(p.op, e.errno, e.message) : p.bad);
      } else if (type === NLMSG_DONE) {
        const errno = decodeDone(b, off, len);
        p.settle(errno !== 0 ? new NetlinkError(p.op, errno) : p.bad);
      } else if (type === NLMSG_OVERRUN) {
        p.settle(failure(p.op, 'ENOBUFS', 'NLMSG_OVERRUN'));
      } else if (type !== NLMSG_NOOP && p.bad === undefined) {
        p.onReply?.(type, b, off, len);
      }
    } catch (err) {
      p.bad ??= failure(p.op, 'EBADMSG', err instanceof Error ? err.message : String(err));
    }
  }

  /** A datagram larger than its slot: the request it answers (if its header says) fails with EMSGSIZE. */
  private truncated(off: number): void {
    const p = msgPid(this.slab, off) === this.port ? this.pending.get(msgSeq(this.slab, off)) : undefined;
    if (p !== undefined) p.settle(failure(p.op, 'EMSGSIZE', `a reply larger than ${SLOT} bytes`));
    else this.invalid(`a datagram larger than ${SLOT} bytes`);
  }

  private invalid(what: string): void {
    this.report(failure('netlink message', 'EBADMSG', what));
  }

  private onSocketError(err: NativeError): void {
    if (!this.closed) this.report(new NetlinkError('netlink socket', err.errno, undefined, err.code));
  }

  private report(err: NetlinkError): void {
    try {
      this.h.onError?.(err);
    } catch {
      // the handler's own failure: nothing may escape the Reader's callback
    }
  }
}
