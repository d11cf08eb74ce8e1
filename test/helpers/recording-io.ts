/**
 * A `DataplaneIo` (src/dataplane/io.ts) for unit tests that run a real Dataplane: it hands every
 * call to the native binding (so the discard fd and FIFOs behave as they really do) and records
 * each batched write: which function, its fd, how many packets it was given, wrote and failed.
 * `onCall`, when set, runs after each recorded call: a test reads the Dataplane's figures there
 * to see them as they stood before the warm-up reset them.
 *
 *   const io = new RecordingIo();
 *   const dp = new Dataplane({ ..., io });
 *   ... io.calls: [{ fn: 'sendRaw', fd: -2, n: 8, done: 8, failed: 0 }, ...]
 */
import { nativeIo, type DataplaneIo } from '../../src/dataplane/io.js';

export interface IoCall {
  fn: 'sendRaw' | 'sendPacket' | 'writeTun';
  fd: number;
  /** Packets handed over. */
  n: number;
  /** Packets the call reported written. */
  done: number;
  /** Packets that failed (res[0]). */
  failed: number;
}

export class RecordingIo implements DataplaneIo {
  readonly calls: IoCall[] = [];
  onCall: ((call: IoCall) => void) | undefined;
  readonly Reader: DataplaneIo['Reader'];
  readonly DISCARD_FD: number;

  constructor(private readonly real: DataplaneIo = nativeIo) {
    this.Reader = real.Reader;
    this.DISCARD_FD = real.DISCARD_FD;
  }

  writeTun(...a: Parameters<DataplaneIo['writeTun']>): number {
    return this.record('writeTun', a[0], a[4], this.real.writeTun(...a), a[5]);
  }

  sendRaw(...a: Parameters<DataplaneIo['sendRaw']>): number {
    return this.record('sendRaw', a[0], a[5], this.real.sendRaw(...a), a[6]);
  }

  sendPacket(...a: Parameters<DataplaneIo['sendPacket']>): number {
    return this.record('sendPacket', a[0], a[5], this.real.sendPacket(...a), a[6]);
  }

  private record(fn: IoCall['fn'], fd: number, n: number, done: number, res: Int32Array): number {
    const call = { fn, fd, n, done, failed: res[0]! };
    this.calls.push(call);
    this.onCall?.(call);
    return done;
  }
}
