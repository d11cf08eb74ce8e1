/**
 * The TCP header (RFC 9293 §3.1, formerly RFC 793) as a view over bytes, for the offload path
 * (segment.ts and coalesce.ts), which segments and coalesces TCP/IPv4 packets without a TCP stack.
 *
 *     0                   1                   2                   3
 *     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |          Source Port          |       Destination Port        |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |                        Sequence Number                        |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |                    Acknowledgment Number                      |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |  Data |       |C|E|U|A|P|R|S|F|                               |
 *    | Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |
 *    |       |       |R|E|G|K|H|T|N|N|                               |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |           Checksum            |         Urgent Pointer        |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *    |                           [Options]                           |
 *    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
 *
 * Flow: offsets, flags, the timestamp option layout Linux sends; the accessors, in header order
 * (Sequence Number, Data Offset, flags, Checksum); then `tcpPseudoSum`, the pseudo-header part
 * of the checksum (RFC 9293 §3.1 "Checksum"), for TCP and UDP alike.
 * Offsets are from the first byte of the TCP header; accessors take `(buf, t)`, `t` that byte,
 * and are unchecked (the header's bytes must be there). Pure; no allocation.
 */
import type { Buffer } from 'node:buffer';
import { OFF_DST, OFF_SRC } from './ipv4.js';

export const TCP_OFF_SRC_PORT = 0;
export const TCP_OFF_DST_PORT = 2;
/** Sequence Number (32 bits): of the first data byte. */
export const TCP_OFF_SEQ = 4;
/** Acknowledgment Number (32 bits), valid with ACK. */
export const TCP_OFF_ACK = 8;
/** Data Offset (high 4 bits, header length in 32-bit words) and reserved bits (low 4). */
export const TCP_OFF_DATA_OFFSET = 12;
/** The control bits (flags) byte. */
export const TCP_OFF_FLAGS = 13;
/** Window (16 bits), in bytes (before the window scale). */
export const TCP_OFF_WINDOW = 14;
/** Checksum (16 bits): over the pseudo-header, the header and the data. */
export const TCP_OFF_CHECKSUM = 16;
/** Offset of the TCP checksum field from the start of the TCP header (`csum_offset` for TCP). */
export const TCP_CSUM_OFFSET = TCP_OFF_CHECKSUM;
export const TCP_OFF_URGENT = 18;

/** Header length without options. */
export const TCP_MIN_HEADER = 20;
/** IP protocol number of TCP. */
export const IPPROTO_TCP = 6;

export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_PSH = 0x08;
export const TCP_ACK = 0x10;
export const TCP_URG = 0x20;
export const TCP_ECE = 0x40;
export const TCP_CWR = 0x80;

/**
 * The first word of the options of a segment carrying only a timestamp, as Linux lays it out
 * (NOP, NOP, kind 8, length 10; RFC 7323 Appendix A): header length 32.
 */
export const TCP_TIMESTAMP_WORD = 0x0101080a;
export const TCP_TIMESTAMP_HEADER = 32;

/** Sequence Number (32 bits), as a signed int32 (arithmetic on it is mod 2^32 with `| 0`). */
export function getTcpSeq(buf: Buffer, t: number): number {
  const s = t + TCP_OFF_SEQ;
  return (buf[s] << 24) | (buf[s + 1] << 16) | (buf[s + 2] << 8) | buf[s + 3];
}

/** Sequence Number (32 bits), from an int32 (or uint32). */
export function setTcpSeq(buf: Buffer, t: number, seq: number): void {
  const s = t + TCP_OFF_SEQ;
  buf[s] = (seq >> 24) & 0xff;
  buf[s + 1] = (seq >> 16) & 0xff;
  buf[s + 2] = (seq >> 8) & 0xff;
  buf[s + 3] = seq & 0xff;
}

/** Header length in bytes (Data Offset * 4): 20..60 for a valid header, options included. */
export function getTcpHeaderLength(buf: Buffer, t: number): number {
  return (buf[t + TCP_OFF_DATA_OFFSET] >> 4) << 2;
}

/** The control bits (8 bits): TCP_FIN ... TCP_CWR. */
export function getTcpFlags(buf: Buffer, t: number): number {
  return buf[t + TCP_OFF_FLAGS];
}

/** The control bits (8 bits). */
export function setTcpFlags(buf: Buffer, t: number, flags: number): void {
  buf[t + TCP_OFF_FLAGS] = flags & 0xff;
}

/** Checksum (16 bits). */
export function setTcpChecksum(buf: Buffer, t: number, checksum: number): void {
  buf[t + TCP_OFF_CHECKSUM] = (checksum >> 8) & 0xff;
  buf[t + TCP_OFF_CHECKSUM + 1] = checksum & 0xff;
}

/**
 * The pseudo-header's contribution to a TCP or UDP checksum over an IPv4 header at `ip` (RFC 9293
 * §3.1: source, destination, zero, protocol, TCP length): a sum in 0..0x3ffff, not folded. With
 * `foldSum` it is what Linux leaves in the checksum field of a CHECKSUM_PARTIAL packet.
 */
export function tcpPseudoSum(buf: Buffer, ip: number, protocol: number, l4Length: number): number {
  const s = ip + OFF_SRC;
  const d = ip + OFF_DST;
  return (
    ((buf[s] << 8) | buf[s + 1]) +
    ((buf[s + 2] << 8) | buf[s + 3]) +
    ((buf[d] << 8) | buf[d + 1]) +
    ((buf[d + 2] << 8) | buf[d + 3]) +
    protocol +
    l4Length
  );
}
