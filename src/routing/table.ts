/**
 * Longest-prefix-match table for IPv4: which value (peer, route) covers a destination address.
 *
 * Structure: a path-compressed binary trie (a PATRICIA trie, as in wireguard-go's allowedips.go)
 * stored in one Int32Array, with a direct-indexed first level of 2^k slots in front of it.
 *
 *   slots (2^k, k = floor(log2 n) clamped to 1..16)     trie nodes, 5 int32 each
 *   +------------+------------+                         +------+-----+-----+------+-------+
 *   | start node | best value | <- addr >>> (32 - k)    | addr | len | val | left | right |
 *   +------------+------------+                         +------+-----+-----+------+-------+
 *
 * - Trie: every node is a prefix. Nodes that carry a value are the table's prefixes; the others
 *   are glue where two prefixes diverge, so each glue node has two children and there are at
 *   most n - 1 of them: at most 2n - 1 nodes of 20 bytes. A child's prefix extends its parent's
 *   by any number of bits (that is the path compression), so a lookup visits only nodes whose
 *   prefix it matches, each with a strictly longer length: at most 33 nodes, about log2(n) for
 *   random prefixes.
 * - Slots: for each k-bit value s, the best value among trie nodes shorter than k bits that
 *   contain s, and the first node at depth >= k to continue from. This skips the top k levels,
 *   which are the dense part of the trie when n is large. Slots cost 8 * 2^k <= 8n bytes.
 *
 * Cost: memory at most 20 * (2n - 1) bytes of nodes + 8n of slots + 5n for the entries + the
 * values array (8n): under 65 bytes per prefix; bench/lpm.ts measures ~49, i.e. ~5 MB at
 * 100 000 prefixes. A lookup is one slot read plus at most 33 - k node visits, each a
 * Math.clz32 and four array reads, and allocates nothing. Build is n insertions of at most 33
 * steps plus 2^k slot walks of at most k steps (~50 ms for 100 000 prefixes).
 *
 * Why this: a binary trie is the simplest structure whose memory is proportional to n whatever
 * the prefixes are; path compression bounds it at 2n - 1 nodes; the first level is the cheap
 * fix for its depth (measured at 100 000 prefixes: ~50 ns per lookup against ~190 ns for the
 * trie alone). Alternatives set aside: hash maps per prefix length scanned from /32 down cost
 * up to 33 hashes per lookup (every miss pays all of them); DIR-24-8 style multibit arrays are
 * 2-3 reads per lookup but need a 2^24-entry first level (32-64 MB), or a 256-entry chunk per
 * long prefix (100 000 random /25s alone would take ~100 MB), which is not proportional to n;
 * compressed multibit tries (tree bitmap, poptrie) fix that with popcounts over 64-bit bitmaps,
 * which JavaScript has no fast form of.
 *
 * The table is immutable: built once by `PrefixTable.build`, read by `lookup`/`lookupIndex`,
 * and replaced as a whole (config reload builds a new one and swaps the reference), so lookups
 * never see a half-updated structure and no locking or copy-on-write is needed.
 *
 * Pure: no I/O, no Node imports.
 */

import { formatPrefix, maskOf } from './prefix.js';

/** One prefix and its value, as given to `build` and returned by `entries`. */
export interface PrefixEntry<T> {
  /** Network address, int32 (see prefix.ts); host bits zero. */
  addr: number;
  /** Prefix length in bits, 0..32. */
  len: number;
  value: T;
}

// Node layout in the trie array: NODE_SIZE int32 per node, nodes referenced by their offset
// (index * NODE_SIZE) so that a lookup never multiplies. NIL marks no node / no value.
const F_ADDR = 0; // network address, int32
const F_LEN = 1; // prefix length 0..32
const F_VAL = 2; // insertion index of the value, or NIL for a glue node
const F_CHILD = 3; // F_CHILD + 0: child whose next bit is 0, F_CHILD + 1: bit is 1
const NODE_SIZE = 5;
const NIL = -1;

/** Largest first-level stride: 2^16 slots = 512 KiB, reached at 65 536 prefixes. */
const MAX_STRIDE = 16;

/** The bit of `a` at position i (0 = most significant), for i in 0..31. */
function bitAt(a: number, i: number): number {
  return (a >>> (31 - i)) & 1;
}

/**
 * An immutable IPv4 longest-prefix-match table from prefixes to values of type T.
 * See the module comment for the structure and its cost.
 */
export class PrefixTable<T> {
  /** Trie nodes, NODE_SIZE int32 each (layout above). */
  readonly #nodes: Int32Array;
  /** 2^k pairs (start node offset, best value index) indexed by the top k bits. */
  readonly #slots: Int32Array;
  /** 32 - k: shifting an address right by this gives its slot. */
  readonly #shift: number;
  /** The entries in insertion order; value indexes in the trie point here. */
  readonly #addrs: Int32Array;
  readonly #lens: Uint8Array;
  readonly #values: T[];

  private constructor(
    nodes: Int32Array,
    slots: Int32Array,
    shift: number,
    addrs: Int32Array,
    lens: Uint8Array,
    values: T[],
  ) {
    this.#nodes = nodes;
    this.#slots = slots;
    this.#shift = shift;
    this.#addrs = addrs;
    this.#lens = lens;
    this.#values = values;
  }

  /**
   * Builds a table from entries; an entry's index in iteration order is what `lookupIndex`
   * returns. `addr` may be given as int32 or uint32 and is stored as int32.
   * Throws RangeError on a length outside 0..32, an address that is not a 32-bit integer, host
   * bits set, or the same prefix twice (config validation reports these with paths first; this
   * is the guard).
   */
  static build<T>(entries: Iterable<PrefixEntry<T>>): PrefixTable<T> {
    const list = Array.isArray(entries) ? (entries as PrefixEntry<T>[]) : Array.from(entries);
    const n = list.length;
    const addrs = new Int32Array(n);
    const lens = new Uint8Array(n);
    const values = new Array<T>(n);
    for (let i = 0; i < n; i++) {
      const { addr, len, value } = list[i];
      if (!(Number.isInteger(len) && len >= 0 && len <= 32)) {
        throw new RangeError(`prefix length must be 0..32: ${len} (entry ${i})`);
      }
      if (!(Number.isInteger(addr) && addr >= -0x8000_0000 && addr <= 0xffff_ffff)) {
        throw new RangeError(`not a 32-bit IPv4 address: ${addr} (entry ${i})`);
      }
      if ((addr & ~maskOf(len)) !== 0) {
        throw new RangeError(`host bits set: ${formatPrefix(addr, len)} (entry ${i})`);
      }
      addrs[i] = addr | 0;
      lens[i] = len;
      values[i] = value;
    }

    // Insert into a trie sized for the worst case (n prefix nodes + n - 1 glue), then trim.
    const nodes = new Int32Array(Math.max(0, 2 * n - 1) * NODE_SIZE);
    let used = 0;
    let root = NIL;
    const newNode = (addr: number, len: number, val: number): number => {
      const off = used;
      nodes[off + F_ADDR] = addr;
      nodes[off + F_LEN] = len;
      nodes[off + F_VAL] = val;
      nodes[off + F_CHILD] = NIL;
      nodes[off + F_CHILD + 1] = NIL;
      used += NODE_SIZE;
      return off;
    };
    for (let i = 0; i < n; i++) {
      root = insert(nodes, root, addrs[i], lens[i], i, newNode);
    }

    // First level: k grows with n so that the slots stay within 8 bytes per prefix.
    const k = Math.min(MAX_STRIDE, Math.max(1, 31 - Math.clz32(n)));
    const shift = 32 - k;
    const slots = new Int32Array(2 << k);
    for (let s = 0; s < 1 << k; s++) {
      const p = s << shift; // the slot's k bits, as an int32 address
      let best = NIL;
      let node = root;
      while (node !== NIL) {
        const len = nodes[node + F_LEN];
        if (len >= k) {
          // Deep enough: continue from here at lookup time, unless it already differs from the
          // slot within the first k bits, in which case nothing below it can match.
          if (Math.clz32(p ^ nodes[node + F_ADDR]) < k) node = NIL;
          break;
        }
        if (Math.clz32(p ^ nodes[node + F_ADDR]) < len) {
          node = NIL;
          break;
        }
        const v = nodes[node + F_VAL];
        if (v !== NIL) best = v;
        node = nodes[node + F_CHILD + bitAt(p, len)]; // len < k: the bit is part of the slot
      }
      slots[2 * s] = node;
      slots[2 * s + 1] = best;
    }

    return new PrefixTable(nodes.slice(0, used), slots, shift, addrs, lens, values);
  }

  /** The number of prefixes. */
  get size(): number {
    return this.#values.length;
  }

  /**
   * Insertion index of the longest prefix containing `addr` (int32 or uint32), or -1 when no
   * prefix does. Allocation-free.
   */
  lookupIndex(addr: number): number {
    const nodes = this.#nodes;
    const slot = (addr >>> this.#shift) << 1;
    let best = this.#slots[slot + 1];
    let node = this.#slots[slot];
    while (node !== NIL) {
      const len = nodes[node + F_LEN];
      if (Math.clz32(addr ^ nodes[node + F_ADDR]) < len) break;
      const v = nodes[node + F_VAL];
      if (v !== NIL) best = v;
      // For len 32 the shift count wraps to 31, but a /32 has no children, so both are NIL.
      node = nodes[node + F_CHILD + ((addr >>> (31 - len)) & 1)];
    }
    return best;
  }

  /** Value of the longest prefix containing `addr` (int32 or uint32), or undefined. Allocation-free. */
  lookup(addr: number): T | undefined {
    const i = this.lookupIndex(addr);
    return i < 0 ? undefined : this.#values[i];
  }

  /** A fresh array of the entries in insertion order (addr as int32). */
  entries(): Array<PrefixEntry<T>> {
    const out = new Array<PrefixEntry<T>>(this.#values.length);
    for (let i = 0; i < out.length; i++) {
      out[i] = { addr: this.#addrs[i], len: this.#lens[i], value: this.#values[i] };
    }
    return out;
  }
}

/**
 * Inserts prefix addr/len with value index `val` into the trie rooted at `root`; returns the
 * (possibly new) root. Walks down while the node's prefix is a prefix of the new one, then
 * either fills in an existing glue node, hangs a new leaf, puts the new prefix above the node
 * it contains, or adds a glue node at the first differing bit.
 */
function insert(
  nodes: Int32Array,
  root: number,
  addr: number,
  len: number,
  val: number,
  newNode: (addr: number, len: number, val: number) => number,
): number {
  if (root === NIL) return newNode(addr, len, val);
  let parentSlot = NIL; // index in `nodes` of the child field that points at `node`
  let node = root;
  for (;;) {
    const nodeAddr = nodes[node + F_ADDR];
    const nodeLen = nodes[node + F_LEN];
    const common = Math.min(Math.clz32(addr ^ nodeAddr), len, nodeLen);
    let replacement: number;
    if (common === nodeLen) {
      if (nodeLen === len) {
        // Same prefix: fill a glue node, or refuse a duplicate.
        const old = nodes[node + F_VAL];
        if (old !== NIL) {
          throw new RangeError(`duplicate prefix ${formatPrefix(addr, len)} (entries ${old} and ${val})`);
        }
        nodes[node + F_VAL] = val;
        return root;
      }
      // The node's prefix contains the new one: descend by the next bit of the new prefix.
      const childSlot = node + F_CHILD + bitAt(addr, nodeLen);
      const child = nodes[childSlot];
      if (child === NIL) {
        nodes[childSlot] = newNode(addr, len, val);
        return root;
      }
      parentSlot = childSlot;
      node = child;
      continue;
    } else if (common === len) {
      // The new prefix contains the node: it goes above it.
      replacement = newNode(addr, len, val);
      nodes[replacement + F_CHILD + bitAt(nodeAddr, len)] = node;
    } else {
      // They differ at bit `common`: a glue node there, with the two as its children.
      replacement = newNode(addr & maskOf(common), common, NIL);
      nodes[replacement + F_CHILD + bitAt(nodeAddr, common)] = node;
      nodes[replacement + F_CHILD + bitAt(addr, common)] = newNode(addr, len, val);
    }
    if (parentSlot === NIL) return replacement;
    nodes[parentSlot] = replacement;
    return root;
  }
}
