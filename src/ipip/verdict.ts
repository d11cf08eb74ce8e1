/**
 * The closed set of outcomes of one packet through ipipd (STYLE rules 2 and 10).
 *
 * Flow: `Verdict` maps each snake_case name to a small int (the value encapsulate/decapsulate
 * return, and the index of a drop counter); `VERDICT_NAMES` is the inverse, in value order;
 * `VERDICT_DESCRIPTIONS` is one line per verdict for the README table. The names are used
 * verbatim as counter keys and in the README, so renaming one is a breaking change.
 *
 * Values are dense 0..VERDICT_COUNT-1, so a `Float64Array(VERDICT_COUNT)` indexed by verdict is
 * a complete set of drop counters. Only `forward` means "send it on"; every other value is a
 * drop. `tun_write_error` and `socket_write_error` are never returned by src/ipip: the I/O layer
 * uses them when the write after a `forward` fails.
 */

export const Verdict = Object.freeze({
  /** Passed every check; `PacketResult` says what to send and to/from which peer. */
  forward: 0,
  /** Outer header invalid: version, IHL, lengths (or the I/O layer's offset/length are impossible). */
  malformed: 1,
  /** Outer header checksum wrong (RFC 791, RFC 1071). */
  bad_checksum: 2,
  /** Outer protocol is not 4 (RFC 2003 §3). */
  not_ipip: 3,
  /** Outer destination is not our underlay address. */
  not_for_us: 4,
  /** Outer source is not a configured peer endpoint (CVE-2020-10136, CERT VU#636397). */
  unknown_peer: 5,
  /** Inner header invalid: version, IHL, lengths, or trailing bytes after the inner datagram. */
  inner_malformed: 6,
  /** Inner header checksum wrong (decapsulation only). */
  inner_bad_checksum: 7,
  /** Inner source is outside the prefixes of the peer that sent it (anti-spoofing). */
  spoofed_source: 8,
  /** Decapsulation: the inner destination matches a peer prefix, i.e. would go back into the tunnel. */
  bad_destination: 9,
  /** Inner TTL is 0 (RFC 2003 §3.1: MUST NOT encapsulate). */
  ttl_expired: 10,
  /** The TUN gave a packet that is not IPv4 (e.g. IPv6). */
  not_ipv4: 11,
  /** Encapsulation: no peer owns the inner destination. */
  no_route: 12,
  /** Encapsulation: inner packet larger than the tunnel MTU toward the peer (RFC 2003 §5.1). */
  too_big: 13,
  /** Would loop through the tunnel (RFC 2003 §3.2). */
  loop: 14,
  /** The receive slot was too small for the packet (the I/O layer reports length -1). */
  truncated: 15,
  /** Writing a decapsulated packet to the TUN failed (I/O layer). */
  tun_write_error: 16,
  /** Sending an encapsulated packet on the raw socket failed (I/O layer). */
  socket_write_error: 17,
  /** Decapsulation: outer ECN is CE but the inner packet is not ECN-capable (RFC 6040 §4.2). */
  ecn_drop: 18,
  /** FOU: a UDP datagram to our FOU port from a peer whose encap is not fou. */
  not_fou_peer: 19,
} as const);

/** A verdict name: the counter key and README spelling. */
export type VerdictName = keyof typeof Verdict;
/** A verdict value: 0 (`forward`) .. VERDICT_COUNT - 1. */
export type Verdict = (typeof Verdict)[VerdictName];

/** `VERDICT_NAMES[v]` is the name of verdict value `v`. */
export const VERDICT_NAMES: readonly VerdictName[] = Object.freeze([
  'forward',
  'malformed',
  'bad_checksum',
  'not_ipip',
  'not_for_us',
  'unknown_peer',
  'inner_malformed',
  'inner_bad_checksum',
  'spoofed_source',
  'bad_destination',
  'ttl_expired',
  'not_ipv4',
  'no_route',
  'too_big',
  'loop',
  'truncated',
  'tun_write_error',
  'socket_write_error',
  'ecn_drop',
  'not_fou_peer',
] as const);

/** Number of verdicts; the size of a counter array indexed by verdict. */
export const VERDICT_COUNT = VERDICT_NAMES.length;

/** One line per verdict, for the README's counter table and `--help`-style listings. */
export const VERDICT_DESCRIPTIONS: Readonly<Record<VerdictName, string>> = Object.freeze({
  forward: 'Passed every check and was handed to the I/O layer to send.',
  malformed: 'Outer IPv4 header invalid: version not 4, IHL < 5, or lengths inconsistent with what was received.',
  bad_checksum: 'Outer IPv4 header checksum wrong (checked on headers without options: the kernel verified it first, and fills Record Route and Timestamp options in without updating it).',
  not_ipip: 'Outer protocol is not 4 (IP-in-IP).',
  not_for_us: 'Outer destination is not our underlay address.',
  unknown_peer: 'Outer source is not a configured peer endpoint (the CVE-2020-10136 open-relay hole).',
  inner_malformed: 'Inner IPv4 header invalid (version, IHL, lengths) or bytes left after the inner datagram.',
  inner_bad_checksum: 'Inner IPv4 header checksum wrong (received packets only).',
  spoofed_source: "Inner source is outside the sending peer's prefixes.",
  bad_destination: 'Inner destination of a received packet matches a peer prefix: it would go back into the tunnel.',
  ttl_expired: 'Inner TTL is 0 (from the TUN device: answered with ICMP Time Exceeded).',
  not_ipv4: 'The TUN device gave a packet that is not IPv4 (e.g. IPv6).',
  no_route: 'No peer owns the inner destination of a packet from the TUN device.',
  too_big: 'Packet from the TUN device with DF set is larger than the tunnel MTU toward its peer (answered with ICMP Fragmentation Needed); without DF it is fragmented instead.',
  loop: 'Inner source or destination is a tunnel endpoint: it would loop (RFC 2003 section 3.2).',
  truncated: 'The packet did not fit the receive slot.',
  tun_write_error: 'Writing a decapsulated packet to the TUN device failed.',
  socket_write_error: 'Sending an encapsulated packet on the raw socket failed.',
  ecn_drop: 'Outer ECN is CE but the inner packet is not ECN-capable, so the congestion mark cannot be passed on (RFC 6040).',
  not_fou_peer: 'A UDP datagram reached the FOU port from a peer whose encap is not fou.',
});
