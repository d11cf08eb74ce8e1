/**
 * The I/O a data-path queue does, as an interface (STYLE rule 1: the I/O adapters sit behind
 * small interfaces): `DataplaneIo`, the part of the native binding (src/tun/native.ts) the
 * batch handlers call, with the binding itself as the default (`nativeIo`); then `Ports`, the
 * queue's file descriptors and the result words every call shares. (The errno name a failed
 * call leaves for the status report is src/tun/native.ts `errnoLabel`.)
 *
 * Tests hand a Dataplane their own `DataplaneIo` (recording, or wrapping the native one) instead
 * of spying on the module.
 */
import { native, type NativeBinding } from '../tun/native.js';

/**
 * What the data path takes from the native binding: the batched `Reader` (one per fd), the
 * batched writes `writeTun`, `sendRaw` and `sendPacket`, and `DISCARD_FD`, the fd that counts
 * every packet as written without a system call (the JIT warm-up's). Contracts as there.
 */
export type DataplaneIo = Pick<NativeBinding, 'Reader' | 'writeTun' | 'sendRaw' | 'sendPacket' | 'DISCARD_FD'> & Partial<Pick<NativeBinding, 'sendUdp'>>;

/** The native binding: the default I/O. */
export const nativeIo: DataplaneIo = native;

/**
 * A queue's fds and the I/O they go through. The fds belong to the caller, who closes them;
 * they change only for the length of the warm-up (warmup.ts), which swaps in the discard fd.
 */
export class Ports {
  /** Results of the last batched write: res[0] = packets that failed, res[1] = errno of the last. */
  readonly res = new Int32Array(2);

  constructor(
    readonly io: DataplaneIo,
    /** The TUN queue's fd. */
    public tun: number,
    /** The raw protocol-4 socket's fd. */
    public raw: number,
    /** `underlay.send: packet`: the AF_PACKET socket's fd, else -1. */
    public packet: number,
    /** `underlay.send: packet`: the next-hop table (hops.ts), else empty. */
    readonly hops: Int32Array,
  ) {}
}

