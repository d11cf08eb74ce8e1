/**
 * IPv4 addresses and prefixes as plain numbers.
 *
 * Representation: an address a.b.c.d is the **signed** 32-bit integer that
 * `buf.readInt32BE(off)` returns for those four bytes (RFC 791 section 3.1: addresses are
 * 32 bits, network byte order). Addresses from 128.0.0.0 upward are negative. The signed form is
 * deliberate: V8 keeps int32 values as small integers, whereas `>>> 0` values >= 2^31 become heap
 * numbers, and that was measured as a GC source on the packet path. Every function here also
 * accepts the unsigned form (bitwise operators apply ToInt32/ToUint32), but returns int32.
 *
 * A prefix is (addr, len) with len 0..32 and no host bits set (RFC 4632 section 3.1 notation
 * a.b.c.d/len).
 *
 * Flow, in the order the functions appear: text -> number (`parseIPv4`) and back
 * (`formatIPv4`); the netmask for a length (`maskOf`); text -> prefix with an error string for
 * config messages (`parsePrefix`) and back (`formatPrefix`); then the two set relations the
 * config validator and the routing table need (`prefixContains`, `prefixesOverlap`).
 *
 * Pure: no I/O, no Node imports. Parsing and formatting are control-path code; `prefixContains`
 * and `prefixesOverlap` do not allocate and may be used per packet.
 */

/** An IPv4 prefix: `addr` is the int32 network address (host bits zero), `len` is 0..32. */
export interface Prefix {
  addr: number;
  len: number;
}

const CH_DOT = 0x2e;
const CH_0 = 0x30;
const CH_9 = 0x39;

/**
 * Parses a strict dotted quad: exactly four decimal parts 0..255 separated by '.', no leading
 * zeros ("010" is octal to inet_aton(3), so it is refused rather than guessed), no sign, no
 * whitespace, no other forms ("10.1", hex). Returns the address as int32, or undefined.
 */
export function parseIPv4(s: string): number | undefined {
  const n = s.length;
  if (n < 7 || n > 15) return undefined; // "0.0.0.0" .. "255.255.255.255"
  let acc = 0; // parts already closed, as an int up to 24 bits
  let part = 0; // value of the part being read
  let digits = 0; // digits in the part being read
  let dots = 0;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c === CH_DOT) {
      if (digits === 0 || dots === 3) return undefined;
      acc = (acc << 8) | part;
      part = 0;
      digits = 0;
      dots++;
    } else if (c >= CH_0 && c <= CH_9) {
      if (digits === 1 && part === 0) return undefined; // leading zero
      part = part * 10 + (c - CH_0);
      digits++;
      if (part > 255) return undefined;
    } else {
      return undefined;
    }
  }
  if (dots !== 3 || digits === 0) return undefined;
  return (acc << 8) | part; // a << 24 lands in the sign bit: int32 by construction
}

/** Formats an address (int32, or uint32) as a dotted quad. */
export function formatIPv4(a: number): string {
  return `${a >>> 24}.${(a >>> 16) & 255}.${(a >>> 8) & 255}.${a & 255}`;
}

/**
 * The netmask of a prefix length as int32: `len` leading one bits. maskOf(0) = 0,
 * maskOf(24) = 255.255.255.0, maskOf(32) = -1 (255.255.255.255).
 * Throws RangeError unless len is an integer 0..32 (a programming error, not input).
 */
export function maskOf(len: number): number {
  if (!(len >= 0 && len <= 32 && Number.isInteger(len))) {
    throw new RangeError(`prefix length must be 0..32: ${len}`);
  }
  // JavaScript shifts count mod 32, so -1 << 32 is -1: length 0 needs its own case.
  return len === 0 ? 0 : -1 << (32 - len);
}

/** Reads a prefix length: decimal 0..32, no sign, no leading zero, no whitespace. */
function parseLength(s: string): number | undefined {
  const n = s.length;
  if (n === 0 || n > 2) return undefined;
  let v = 0;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c < CH_0 || c > CH_9) return undefined;
    v = v * 10 + (c - CH_0);
  }
  if (n === 2 && s.charCodeAt(0) === CH_0) return undefined; // "08"
  return v <= 32 ? v : undefined;
}

/**
 * Parses "a.b.c.d/len". The length is required (a bare address is refused with a hint, so that
 * a forgotten "/24" does not silently become a host route), and host bits must be zero.
 * On failure returns a one-line message meant to be placed after a config path, e.g.
 * `host bits set: 198.51.100.1/25 (did you mean 198.51.100.0/25?)`. Text that may carry
 * invisible characters is quoted with JSON escapes.
 */
export function parsePrefix(s: string): Prefix | string {
  const slash = s.indexOf('/');
  if (slash < 0) {
    return parseIPv4(s) === undefined
      ? `not an IPv4 prefix: ${JSON.stringify(s)} (expected a.b.c.d/len)`
      : `missing prefix length: ${s} (write ${s}/32 for a single host)`;
  }
  const addrText = s.slice(0, slash);
  const lenText = s.slice(slash + 1);
  const addr = parseIPv4(addrText);
  if (addr === undefined) return `not an IPv4 address: ${JSON.stringify(addrText)}`;
  const len = parseLength(lenText);
  if (len === undefined) return `prefix length must be 0..32: ${JSON.stringify(lenText)}`;
  const net = addr & maskOf(len);
  if (net !== addr) return `host bits set: ${s} (did you mean ${formatPrefix(net, len)}?)`;
  return { addr, len };
}

/** Formats a prefix as "a.b.c.d/len". Does not check host bits. */
export function formatPrefix(addr: number, len: number): string {
  return `${formatIPv4(addr)}/${len}`;
}

/**
 * True when address `x` lies in addr/len, i.e. x agrees with addr in the first len bits.
 * Math.clz32 of the XOR counts the leading bits the two share; len 0 contains everything.
 */
export function prefixContains(addr: number, len: number, x: number): boolean {
  return Math.clz32(addr ^ x) >= len;
}

/**
 * True when two prefixes share at least one address. Two CIDR blocks are either nested or
 * disjoint (RFC 4632 section 3.1), so they overlap exactly when the shorter contains the
 * longer's network address.
 */
export function prefixesOverlap(a: number, alen: number, b: number, blen: number): boolean {
  return Math.clz32(a ^ b) >= (alen < blen ? alen : blen);
}
