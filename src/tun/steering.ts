/**
 * Underlay steering (io.queues > 1): the classic BPF program that makes each queue's raw
 * protocol-4 socket keep only its share of the IPIP datagrams. Built here and handed to the addon
 * as bytes (native `openRaw`'s `filter`), which only attaches it (SO_ATTACH_FILTER).
 *
 * Every raw socket of protocol 4 gets a copy of every IPIP datagram, so with one socket per
 * queue each socket keeps only its share, chosen by a filter the kernel runs before queueing (a
 * raw IPv4 socket's filter sees the packet from the outer IP header). The share is a hash of the
 * inner flow, so that one flow's packets all go to one queue, in order:
 *
 *   p = the first 4 bytes after the inner header (the TCP/UDP ports) for an unfragmented TCP or
 *       UDP packet whose header is there, else 0
 *   h = ((inner src * K + inner dst) * K + p) * K   (mod 2^32, K = 0x9e3779b1, Fibonacci hashing)
 *   queue = ((h >> 16) * count) >> 16   (the top bits of h pick the queue)
 *
 * A multiplication carries each input bit only upward, so only h's top bits depend on all of the
 * input: Linux picks even source ports for connect(), and a queue taken from a lower bit (as
 * `h % count` or `(h >> 16) % count` would) put every TCP flow of a host on one queue.
 *
 * A datagram too short to hold an inner IPv4 header after the outer one hashes to queue 0, so the
 * data path there still sees it, drops it and counts it (nothing is lost in the kernel).
 *
 * Flow, in the order the code appears: the cBPF opcodes (include/uapi/linux/bpf_common.h,
 * filter.h); `BpfAsm`, an assembler with symbolic forward labels that writes `struct sock_filter`
 * entries; `steeringFilter`, the program. test/unit/steering.test.ts runs it in a cBPF
 * interpreter against the reference model (test/helpers/steering-model.ts), and
 * test/integration/steering.test.ts runs it in the kernel against the same model.
 */

// Instruction classes, sizes, modes, ALU/jump operations and operand sources of classic BPF.
const BPF_LD = 0x00;
const BPF_LDX = 0x01;
const BPF_ST = 0x02;
const BPF_STX = 0x03;
const BPF_ALU = 0x04;
const BPF_JMP = 0x05;
const BPF_RET = 0x06;
const BPF_MISC = 0x07;
const BPF_W = 0x00;
const BPF_H = 0x08;
const BPF_B = 0x10;
const BPF_IMM = 0x00;
const BPF_IND = 0x40;
const BPF_MEM = 0x60;
const BPF_LEN = 0x80;
const BPF_MSH = 0xa0;
const BPF_ADD = 0x00;
const BPF_MUL = 0x20;
const BPF_AND = 0x50;
const BPF_LSH = 0x60;
const BPF_RSH = 0x70;
const BPF_JA = 0x00;
const BPF_JEQ = 0x10;
const BPF_JGE = 0x30;
const BPF_K = 0x00;
const BPF_X = 0x08;
const BPF_TAX = 0x00;
const BPF_TXA = 0x80;

/** Bytes of one `struct sock_filter` { u16 code; u8 jt; u8 jf; u32 k; }. */
export const SOCK_FILTER_SIZE = 8;

const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;

/** 2^32 / golden ratio, odd. */
const FIB = 0x9e3779b1;

/** Queue steering of one raw socket: it keeps the datagrams of queue `index` of `count` (1..64). */
export interface RawSteering {
  index: number;
  count: number;
}

/** A cBPF program with symbolic jump targets (forward only, as cBPF requires), resolved by `build`. */
class BpfAsm {
  private readonly code: number[] = [];
  private readonly k: number[] = [];
  /** Jump targets as labels, -1: the next instruction. */
  private readonly jt: number[] = [];
  private readonly jf: number[] = [];
  /** Label -> the index of the instruction it names. */
  private readonly at = new Map<number, number>();

  /** One instruction; for BPF_JA, `k` is the target label. */
  stmt(code: number, k: number): void {
    this.jump(code, k, -1, -1);
  }

  /** A conditional jump to labels `jt` / `jf` (-1: the next instruction). */
  jump(code: number, k: number, jt: number, jf: number): void {
    this.code.push(code);
    this.k.push(k >>> 0);
    this.jt.push(jt);
    this.jf.push(jf);
  }

  label(label: number): void {
    this.at.set(label, this.code.length);
  }

  /** The program as `struct sock_filter` entries in host byte order, as setsockopt takes them. */
  build(): Uint8Array {
    const n = this.code.length;
    const bytes = new ArrayBuffer(n * SOCK_FILTER_SIZE);
    const code = new Uint16Array(bytes);
    const u8 = new Uint8Array(bytes);
    const k = new Uint32Array(bytes);
    for (let i = 0; i < n; i++) {
      code[i * 4] = this.code[i]!;
      u8[i * 8 + 2] = this.offset(i, this.jt[i]!);
      u8[i * 8 + 3] = this.offset(i, this.jf[i]!);
      // An unconditional jump keeps its target in k.
      k[i * 2 + 1] = this.code[i] === (BPF_JMP | BPF_JA) ? this.offset(i, this.k[i]!) : this.k[i]!;
    }
    return u8;
  }

  /** Instructions to skip from `from` to reach `label` (0 for -1). */
  private offset(from: number, label: number): number {
    if (label < 0) return 0;
    const to = this.at.get(label);
    if (to === undefined || to <= from || to - from - 1 > 255) throw new Error(`BpfAsm: bad jump from ${from} to label ${label}`);
    return to - from - 1;
  }
}

function checkSteering(s: RawSteering): void {
  if (typeof s !== 'object' || s === null) throw new TypeError('steer must be an object');
  const { index, count } = s;
  if (typeof index !== 'number' || typeof count !== 'number') throw new TypeError('steer.index and steer.count must be numbers');
  if (!Number.isInteger(count) || count < 1 || count > 64 || !Number.isInteger(index) || index < 0 || index >= count) {
    throw new RangeError('steer.count must be an integer in [1, 64] and steer.index in [0, count)');
  }
}

/**
 * The filter that keeps queue `s.index` of `s.count`'s datagrams (the hash above), for native
 * `openRaw`. TypeError if `s` is not { index: number, count: number }, RangeError outside
 * count in [1, 64] and index in [0, count).
 */
export function steeringFilter(s: RawSteering): Uint8Array {
  checkSteering(s);
  const { index, count } = s;
  const OUTER_OK = 0, PORTS = 1, NO_PORTS = 2, SUM = 3, SHORT = 4, ACCEPT = 5, DROP = 6;
  // Scratch memory: M[1] outer header length, M[2] inner src, M[3] inner dst, M[4] both header
  // lengths, M[5] the ports word (p).
  const a = new BpfAsm();
  a.stmt(BPF_LDX | BPF_B | BPF_MSH, 0);            // X = outer IHL * 4
  a.stmt(BPF_STX, 1);
  a.stmt(BPF_MISC | BPF_TXA, 0);
  a.stmt(BPF_ALU | BPF_ADD | BPF_K, 20);
  a.stmt(BPF_MISC | BPF_TAX, 0);                   // X = outer + 20
  a.stmt(BPF_LD | BPF_W | BPF_LEN, 0);
  a.jump(BPF_JMP | BPF_JGE | BPF_X, 0, OUTER_OK, SHORT);
  a.label(OUTER_OK);
  a.stmt(BPF_LDX | BPF_W | BPF_MEM, 1);            // X = outer IHL * 4
  a.stmt(BPF_LD | BPF_W | BPF_IND, 12);            // inner source
  a.stmt(BPF_ST, 2);
  a.stmt(BPF_LD | BPF_W | BPF_IND, 16);            // inner destination
  a.stmt(BPF_ST, 3);
  a.stmt(BPF_LD | BPF_H | BPF_IND, 6);             // inner flags + fragment offset
  a.stmt(BPF_ALU | BPF_AND | BPF_K, 0x3fff);       // MF or an offset: a fragment, no ports
  a.jump(BPF_JMP | BPF_JEQ | BPF_K, 0, -1, NO_PORTS);
  a.stmt(BPF_LD | BPF_B | BPF_IND, 9);             // inner protocol
  a.jump(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_TCP, PORTS, -1);
  a.jump(BPF_JMP | BPF_JEQ | BPF_K, IPPROTO_UDP, PORTS, NO_PORTS);
  a.label(PORTS);
  a.stmt(BPF_LD | BPF_B | BPF_IND, 0);             // inner version/IHL
  a.stmt(BPF_ALU | BPF_AND | BPF_K, 0xf);
  a.stmt(BPF_ALU | BPF_LSH | BPF_K, 2);
  a.stmt(BPF_ALU | BPF_ADD | BPF_X, 0);            // A = outer + inner header lengths
  a.stmt(BPF_ST, 4);
  a.stmt(BPF_ALU | BPF_ADD | BPF_K, 4);
  a.stmt(BPF_MISC | BPF_TAX, 0);
  a.stmt(BPF_LD | BPF_W | BPF_LEN, 0);
  a.jump(BPF_JMP | BPF_JGE | BPF_X, 0, -1, NO_PORTS); // the 4 port bytes are there
  a.stmt(BPF_LDX | BPF_W | BPF_MEM, 4);
  a.stmt(BPF_LD | BPF_W | BPF_IND, 0);             // source and destination port
  a.stmt(BPF_JMP | BPF_JA, SUM);
  a.label(NO_PORTS);
  a.stmt(BPF_LD | BPF_IMM, 0);
  a.label(SUM);
  a.stmt(BPF_ST, 5);                               // M[5] = p
  a.stmt(BPF_LD | BPF_W | BPF_MEM, 2);
  a.stmt(BPF_ALU | BPF_MUL | BPF_K, FIB);          // src * K
  a.stmt(BPF_LDX | BPF_W | BPF_MEM, 3);
  a.stmt(BPF_ALU | BPF_ADD | BPF_X, 0);            // + dst
  a.stmt(BPF_ALU | BPF_MUL | BPF_K, FIB);
  a.stmt(BPF_LDX | BPF_W | BPF_MEM, 5);
  a.stmt(BPF_ALU | BPF_ADD | BPF_X, 0);            // + p
  a.stmt(BPF_ALU | BPF_MUL | BPF_K, FIB);
  a.stmt(BPF_ALU | BPF_RSH | BPF_K, 16);
  a.stmt(BPF_ALU | BPF_MUL | BPF_K, count);
  a.stmt(BPF_ALU | BPF_RSH | BPF_K, 16);           // queue = ((h >> 16) * count) >> 16
  a.jump(BPF_JMP | BPF_JEQ | BPF_K, index, ACCEPT, DROP);
  a.label(SHORT);
  a.stmt(BPF_JMP | BPF_JA, index === 0 ? ACCEPT : DROP); // too short to hash: queue 0
  a.label(ACCEPT);
  a.stmt(BPF_RET | BPF_K, 0xffffffff);             // the whole datagram
  a.label(DROP);
  a.stmt(BPF_RET | BPF_K, 0);
  return a.build();
}
