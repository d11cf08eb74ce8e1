/**
 * The underlay -> TUN path for an IPIP datagram the kernel's GRO merged before the raw socket
 * (src/dataplane/receive.ts onRawBatch, writeSegmented): a real Dataplane, the batch handler
 * driven by hand with one crafted datagram, the TUN side a FIFO whose bytes are read back.
 *
 *   raw slot 0: [outer IPv4, proto 4][inner IPv4 | TCP (pseudo-header sum) | 40 000 bytes]
 *        |
 *   onRawBatch(1) --plain--> segments of (TUN MTU - 52) bytes, full checksums, in chunks of 64
 *                 --offload-> one write: virtio_net_hdr TCPV4 gso_size = TUN MTU - 52, the packet
 */
import { readSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/daemon/config.js';
import { createLogger } from '../../src/daemon/logger.js';
import { Dataplane } from '../../src/dataplane/dataplane.js';
import { buildTunnel } from '../../src/dataplane/queue.js';
import { WARM_TCP, writeWarmOuter, writeWarmPacket } from '../../src/dataplane/warmup.js';
import { VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, getVnetGsoSize, getVnetGsoType, getVnetFlags } from '../../src/ipip/vnet.js';
import { Fifos } from '../helpers/fifos.js';
import { ip, refChecksum } from '../helpers/packets.js';

const CONFIG = `
tun: { name: gro0, address: 198.51.100.1/25, mtu: 576 }
underlay: { address: 192.0.2.1 }
peers:
  - { name: b, endpoint: 192.0.2.2, prefixes: [203.0.113.0/25] }
`;
const TUN_MTU = 576;
const PAYLOAD = 40_000;
const MSS = TUN_MTU - 52; // IPv4 20 + TCP 32 (timestamps)

const fifos = new Fifos('ipipd-gro-');
fifos.setUp();
afterAll(() => {
  fifos.closeAll();
  fifos.remove();
});
const fifo = (name: string): number => fifos.fifo(name);

/** Everything waiting in a non-blocking FIFO, read until EAGAIN. */
function drain(fd: number): Buffer {
  const out: Buffer[] = [];
  const b = Buffer.alloc(1 << 16);
  for (;;) {
    try {
      const n = readSync(fd, b, 0, b.length, null);
      out.push(Buffer.from(b.subarray(0, n)));
    } catch {
      return Buffer.concat(out);
    }
  }
}

/** TCP checksum over the pseudo-header, header and payload of the IPv4 packet at `p`: 0 if right. */
function tcpCheck(p: Buffer): number {
  const l4 = p.readUInt16BE(2) - 20;
  const pseudo = Buffer.alloc(12 + l4);
  p.copy(pseudo, 0, 12, 20);
  pseudo[9] = 6;
  pseudo.writeUInt16BE(l4, 10);
  p.copy(pseudo, 12, 20, 20 + l4);
  return refChecksum(pseudo, 0, pseudo.length);
}

describe.each([{ offload: false }, { offload: true }])('a GRO-merged IPIP datagram (offload $offload)', ({ offload }) => {
  const c = parseConfig(CONFIG);
  const { tunnel } = buildTunnel(c, TUN_MTU);
  const tunFd = fifo(`tun-${offload}`);
  const dp = new Dataplane({
    tunFd, rawFd: fifo(`raw-${offload}`), icmpFd: -1, tunnel, batch: 8, tunMtu: TUN_MTU, underlayMax: 1500,
    icmpSource: ip('198.51.100.1'), icmpRate: 100, icmpBurst: 10, log: createLogger('silent'), offload, udpGro: offload,
  });
  afterAll(() => dp.close());

  // What the kernel's GRO hands the raw socket: inner total length over all the payload, a
  // valid inner header checksum, the TCP checksum field holding only the pseudo-header sum.
  const inner = Buffer.alloc(20 + 32 + PAYLOAD);
  writeWarmPacket(inner, 0, WARM_TCP, ip('203.0.113.10'), ip('198.51.100.10'), PAYLOAD, 77, 1000, true);
  const payload = Buffer.from(inner.subarray(52));

  it('reaches the TUN whole, cut for the TUN MTU, and counts as one merged datagram', () => {
    const rx = dp.slabs.rxBuf;
    inner.copy(rx, 20);
    dp.slabs.rawLens[0] = writeWarmOuter(rx, 0, inner.length, ip('192.0.2.2'), ip('192.0.2.1'), 5);
    dp.receive.onRawBatch(1);
    const snap = dp.snapshot();
    expect(snap.drops).toEqual(Object.fromEntries(Object.keys(snap.drops).map((k) => [k, 0])));
    expect(snap.counters.underlay_gro_packets).toBe(1);
    expect(snap.counters.underlay_rx_packets).toBe(1);
    const bytes = drain(tunFd);
    if (offload) {
      // One write: a 10-byte TCPV4 header, then the packet as it came but for the checksum field.
      expect(getVnetFlags(bytes, 0)).toBe(VNET_F_NEEDS_CSUM);
      expect(getVnetGsoType(bytes, 0)).toBe(VNET_GSO_TCPV4);
      expect(getVnetGsoSize(bytes, 0)).toBe(MSS);
      expect(bytes.length).toBe(10 + inner.length);
      expect(bytes.subarray(10 + 52).equals(payload)).toBe(true);
      expect(snap.counters.rx_packets).toBe(1);
      expect(dp.figures.peers.rxPackets[0]).toBe(1);
      return;
    }
    // Plain: the segments back to back in the FIFO, more than one chunk of 64.
    const segs: Buffer[] = [];
    for (let o = 0; o < bytes.length; o += bytes.readUInt16BE(o + 2)) segs.push(bytes.subarray(o, o + bytes.readUInt16BE(o + 2)));
    const want = Math.ceil(PAYLOAD / MSS);
    expect(want).toBeGreaterThan(64);
    expect(segs.length).toBe(want);
    for (const [i, s] of segs.entries()) {
      expect(s.length).toBeLessThanOrEqual(TUN_MTU);
      expect(refChecksum(s, 0, 20)).toBe(0);
      expect(tcpCheck(s)).toBe(0);
      expect(s.readUInt32BE(24)).toBe((1000 + i * MSS) >>> 0); // sequence number
    }
    expect(Buffer.concat(segs.map((s) => s.subarray(52))).equals(payload)).toBe(true);
    expect(snap.counters.rx_packets).toBe(want);
    expect(snap.counters.rx_bytes).toBe(bytes.length);
    expect(dp.figures.peers.rxPackets[0]).toBe(want);
  });
});
