/**
 * A classic BPF interpreter for socket filters, written from the kernel's description
 * (Documentation/networking/filter.rst; net/core/filter.c bpf_check_classic) and sharing no code
 * with src/tun/steering.ts: it decodes `struct sock_filter` bytes (host byte order), checks the
 * program as the kernel does before SO_ATTACH_FILTER takes it, and runs it on a packet.
 *
 * Flow: `decode` (bytes -> instructions), `check` (what the kernel refuses), `run` (the value
 * the filter returns: 0 drops the packet, anything else keeps that many bytes of it).
 *
 * Covers what a socket filter may use except the ancillary loads (negative offsets, SKF_AD_*),
 * which ipipd's programs do not.
 */

export interface Insn {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

/** Scratch memory words (BPF_MEMWORDS). */
const MEM_WORDS = 16;
/** Longest program (BPF_MAXINSNS). */
const MAX_INSNS = 4096;

// Fields of `code`.
const cls = (c: number): number => c & 0x07;
const size = (c: number): number => c & 0x18;
const mode = (c: number): number => c & 0xe0;
const op = (c: number): number => c & 0xf0;
const srcX = (c: number): boolean => (c & 0x08) !== 0;

/** The program in `bytes`, 8 bytes per `struct sock_filter` { u16 code; u8 jt; u8 jf; u32 k }. */
export function decode(bytes: Uint8Array): Insn[] {
  if (bytes.byteLength % 8 !== 0) throw new RangeError(`${bytes.byteLength} bytes is not whole instructions`);
  const copy = new Uint8Array(bytes); // aligned, whatever the caller's offset
  const code = new Uint16Array(copy.buffer);
  const k = new Uint32Array(copy.buffer);
  return Array.from({ length: copy.length / 8 }, (_, i) => ({ code: code[i * 4]!, jt: copy[i * 8 + 2]!, jf: copy[i * 8 + 3]!, k: k[i * 2 + 1]! }));
}

/** Why the kernel would refuse `prog` (bpf_check_classic), or null if it takes it. */
export function check(prog: Insn[]): string | null {
  if (prog.length === 0 || prog.length > MAX_INSNS) return `length ${prog.length}`;
  for (let pc = 0; pc < prog.length; pc++) {
    const { code, jt, jf, k } = prog[pc]!;
    switch (cls(code)) {
      case 0x00: // LD
      case 0x01: // LDX
        if (mode(code) === 0x60 && k >= MEM_WORDS) return `${pc}: M[${k}]`;
        break;
      case 0x02: // ST
      case 0x03: // STX
        if (k >= MEM_WORDS) return `${pc}: M[${k}]`;
        break;
      case 0x04: // ALU
        if ((op(code) === 0x30 || op(code) === 0x90) && !srcX(code) && k === 0) return `${pc}: division by 0`;
        break;
      case 0x05: // JMP
        if (op(code) === 0x00) {
          if (k >= prog.length - pc - 1) return `${pc}: ja out of the program`;
        } else if (pc + 1 + Math.max(jt, jf) >= prog.length) return `${pc}: jump out of the program`;
        break;
      default:
        break;
    }
  }
  if (cls(prog[prog.length - 1]!.code) !== 0x06) return 'the last instruction does not return';
  return null;
}

/** Read `n` bytes big-endian at `off`, or null past the end (the kernel then drops: returns 0). */
function load(pkt: Uint8Array, off: number, n: number): number | null {
  if (off < 0 || off + n > pkt.length) return null;
  let v = 0;
  for (let i = 0; i < n; i++) v = v * 256 + pkt[off + i]!;
  return v;
}

function alu(code: number, a: number, operand: number): number | null {
  switch (op(code)) {
    case 0x00: return (a + operand) >>> 0;
    case 0x10: return (a - operand) >>> 0;
    case 0x20: return Math.imul(a, operand) >>> 0;
    case 0x30: return operand === 0 ? null : Math.floor(a / operand) >>> 0;
    case 0x40: return (a | operand) >>> 0;
    case 0x50: return (a & operand) >>> 0;
    case 0x60: return operand >= 32 ? 0 : (a << operand) >>> 0;
    case 0x70: return operand >= 32 ? 0 : a >>> operand;
    case 0x80: return -a >>> 0;
    case 0x90: return operand === 0 ? null : a % operand;
    case 0xa0: return (a ^ operand) >>> 0;
    default: throw new Error(`alu op ${op(code).toString(16)}`);
  }
}

function jumpTaken(code: number, a: number, operand: number): boolean {
  switch (op(code)) {
    case 0x10: return a === operand;
    case 0x20: return a > operand;
    case 0x30: return a >= operand;
    case 0x40: return (a & operand) !== 0;
    default: throw new Error(`jump op ${op(code).toString(16)}`);
  }
}

/** What the checked program `prog` returns for `pkt` (registers and memory start at 0). */
export function run(prog: Insn[], pkt: Uint8Array): number {
  let a = 0;
  let x = 0;
  const mem = new Uint32Array(MEM_WORDS);
  const width = (c: number): number => (size(c) === 0x00 ? 4 : size(c) === 0x08 ? 2 : 1);
  for (let pc = 0; pc < prog.length; pc++) {
    const { code, jt, jf, k } = prog[pc]!;
    switch (cls(code)) {
      case 0x00: { // LD
        const m = mode(code);
        if (m === 0x00) a = k;
        else if (m === 0x60) a = mem[k]!;
        else if (m === 0x80) a = pkt.length;
        else {
          const v = load(pkt, m === 0x40 ? x + k : k, width(code));
          if (v === null) return 0;
          a = v;
        }
        break;
      }
      case 0x01: { // LDX
        const m = mode(code);
        if (m === 0x00) x = k;
        else if (m === 0x60) x = mem[k]!;
        else if (m === 0x80) x = pkt.length;
        else if (m === 0xa0) {
          const v = load(pkt, k, 1);
          if (v === null) return 0;
          x = (v & 0x0f) << 2;
        } else throw new Error(`ldx mode ${m.toString(16)}`);
        break;
      }
      case 0x02: mem[k] = a; break;
      case 0x03: mem[k] = x; break;
      case 0x04: {
        const v = alu(code, a, srcX(code) ? x : k);
        if (v === null) return 0;
        a = v;
        break;
      }
      case 0x05:
        if (op(code) === 0x00) pc += k;
        else pc += jumpTaken(code, a, srcX(code) ? x : k) ? jt : jf;
        break;
      case 0x06: return (code & 0x18) === 0x10 ? a : k;
      case 0x07: if ((code & 0xf8) === 0x00) x = a; else a = x; break;
    }
  }
  throw new Error('fell off the end (check() refuses such a program)');
}
