/**
 * How a data-path queue is built from the config (src/dataplane/queue.ts): the outer-ID plan of
 * the queues (config io.queues), `queueIds`, and the Peers `buildTunnel` makes from it; each
 * queue's share of the ICMP rate; and `createQueue`, which the main thread and the workers use.
 *
 *   queue q of n, peer i:   ID_k = starts[i] + q + k * step  (mod 2^16),  step = 2^ceil(log2 n)
 *
 *     queue 0  ... s, s+4, s+8 ...        (n = 3, step 4: residue s+0 mod 4)
 *     queue 1  ... s+1, s+5, s+9 ...      (residue s+1)
 *     queue 2  ... s+2, s+6, s+10 ...     (residue s+2; s+3 is nobody's)
 *
 * Flow of this file:
 *   1. `queueIds`: the step for 1..8 queues, random starts (their count and range), given starts kept;
 *   2. `buildTunnel`: each Peer's first ID and step from the plan, everything else as before;
 *   3. the property RFC 6864 §4.1 needs, for every n in 1..8 on shared starts (one next to
 *      65535, so the wrap is crossed): real Tunnels encapsulate real packets for a while (IDs read
 *      from the wire bytes), then the sequences are continued by arithmetic to 2 * 65536 packets
 *      per queue. No ID toward a peer is ever used by two queues, and each queue repeats an ID
 *      only after 65536 / step packets;
 *   4. `icmpLimits` and `createQueue`: a queue on FIFOs with a recording I/O
 *      (test/helpers/recording-io.ts): its Peers on its ID plan, its batch from the config,
 *      warmed up into the discard fd only, every figure zero, not started.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/daemon/config.js';
import { createLogger } from '../../src/daemon/logger.js';
import { queueSnapshot } from '../../src/dataplane/figures.js';
import { buildTunnel, createQueue, icmpLimits, queueIds } from '../../src/dataplane/queue.js';
import { PacketResult, Verdict, type Peer, type Tunnel } from '../../src/ipip/index.js';
import { Fifos, drain } from '../helpers/fifos.js';
import { ip, refChecksum } from '../helpers/packets.js';
import { RecordingIo } from '../helpers/recording-io.js';

// ---------------------------------------------------------------- helpers

const FOUR_PEERS = `
tun: { name: ipip0, address: 198.51.100.0/32 }
underlay: { address: 192.0.2.1 }
peers:
  - { name: h2, endpoint: 192.0.2.2, prefixes: [203.0.113.0/25] }
  - { name: h3, endpoint: 192.0.2.3, prefixes: [203.0.113.128/25], mtu: 1400 }
  - { name: h4, endpoint: 192.0.2.4, prefixes: [10.4.0.0/16] }
  - { name: h5, endpoint: 192.0.2.5, prefixes: [10.5.0.0/16] }
`;
/** An address inside each peer's prefix, in config order. */
const DSTS = ['203.0.113.1', '203.0.113.129', '10.4.0.1', '10.5.0.1'].map(ip);
const ENDPOINTS = ['192.0.2.2', '192.0.2.3', '192.0.2.4', '192.0.2.5'].map(ip);
const SRC = ip('198.51.100.0');

/**
 * A 28-byte ICMP echo request SRC -> dst at offset 20 of a buffer with 20 bytes of headroom,
 * header checksum by the reference RFC 1071 (test/helpers), not src/ipip.
 */
function packetTo(dst: number): Buffer {
  const b = Buffer.alloc(48, 0xa5);
  const o = 20;
  b.fill(0, o, o + 28);
  b[o] = 0x45;
  b.writeUInt16BE(28, o + 2);
  b.writeUInt16BE(0x4000, o + 6);
  b[o + 8] = 64;
  b[o + 9] = 1;
  b.writeInt32BE(SRC, o + 12);
  b.writeInt32BE(dst, o + 16);
  b.writeUInt16BE(refChecksum(b, o, 20), o + 10);
  b[o + 20] = 8;
  return b;
}

/** The smallest power of two >= n, by counting bits (a different route from the code's loop). */
function refStep(n: number): number {
  return 2 ** Math.ceil(Math.log2(n));
}

// ---------------------------------------------------------------- 1. queueIds

describe('queueIds', () => {
  it('step is the smallest power of two >= the queue count: 1, 2, 4, 4, 8, 8, 8, 8', () => {
    const steps = [1, 2, 3, 4, 5, 6, 7, 8].map((n) => queueIds(1, 0, n, [0]).step);
    expect(steps).toEqual([1, 2, 4, 4, 8, 8, 8, 8]);
    // The same by the reference, and every step is a power of two that holds all the queues.
    for (let n = 1; n <= 8; n++) {
      const { step } = queueIds(1, 0, n, [0]);
      expect(step).toBe(refStep(n));
      expect(step & (step - 1)).toBe(0);
      expect(step).toBeGreaterThanOrEqual(n);
      expect(step / 2).toBeLessThan(n);
    }
  });

  it('the queue is returned as given', () => {
    for (let q = 0; q < 8; q++) expect(queueIds(2, q, 8, [1, 2]).queue).toBe(q);
  });

  it('given starts are kept as they are (the workers get the main thread\'s)', () => {
    const starts = [0, 65535, 40000];
    const plan = queueIds(3, 2, 3, starts);
    expect(plan).toEqual({ starts: [0, 65535, 40000], queue: 2, step: 4 });
  });

  it('without starts: one random start per peer, each an integer 0..65535, different per call', () => {
    for (const peers of [0, 1, 5]) expect(queueIds(peers, 0, 1).starts).toHaveLength(peers);
    const many = queueIds(500, 0, 2).starts;
    expect(many).toHaveLength(500);
    expect(many.every((s) => Number.isInteger(s) && s >= 0 && s <= 0xffff)).toBe(true);
    // 500 uniform draws: all in one half, or all alike, or equal to a second draw, would each
    // happen by chance with probability below 2^-400.
    expect(Math.max(...many)).toBeGreaterThanOrEqual(0x8000);
    expect(Math.min(...many)).toBeLessThan(0x8000);
    expect(new Set(many).size).toBeGreaterThan(1);
    expect(queueIds(500, 0, 2).starts).not.toEqual(many);
  });
});

// ---------------------------------------------------------------- 2. buildTunnel

describe('buildTunnel with an ID plan', () => {
  const c = parseConfig(FOUR_PEERS);
  const starts = [0, 65535, 40000, 65533];

  it('peer i starts at (starts[i] + queue) mod 2^16 and advances by the plan\'s step', () => {
    const cases: [number, number, number[], number][] = [
      // queue, queues, first IDs, step
      [0, 1, [0, 65535, 40000, 65533], 1],
      [1, 2, [1, 0, 40001, 65534], 2],
      [3, 5, [3, 2, 40003, 0], 8],
      [2, 3, [2, 1, 40002, 65535], 4],
      [7, 8, [7, 6, 40007, 4], 8],
    ];
    for (const [queue, queues, first, step] of cases) {
      const { tunnel, peers } = buildTunnel(c, 1480, queueIds(4, queue, queues, starts));
      expect(peers.map((p) => p.nextId), `queue ${queue} of ${queues}`).toEqual(first);
      expect(peers.map((p) => p.idStep)).toEqual([step, step, step, step]);
      expect(tunnel.peers).toEqual(peers);
    }
  });

  it('the plan changes only the IDs: names, endpoints, indexes and MTUs as the config says', () => {
    const { peers } = buildTunnel(c, 1480, queueIds(4, 5, 6, starts));
    expect(peers.map((p) => [p.index, p.name, p.endpoint, p.mtu])).toEqual([
      [0, 'h2', ENDPOINTS[0], 1480],
      [1, 'h3', ENDPOINTS[1], 1400],
      [2, 'h4', ENDPOINTS[2], 1480],
      [3, 'h5', ENDPOINTS[3], 1480],
    ]);
  });

  it('without a plan: step 1 from a random start per peer', () => {
    const { peers } = buildTunnel(c, 1480);
    expect(peers.map((p) => p.idStep)).toEqual([1, 1, 1, 1]);
    expect(peers.every((p) => Number.isInteger(p.nextId) && p.nextId >= 0 && p.nextId <= 0xffff)).toBe(true);
  });
});

// ---------------------------------------------------------------- 3. queues never share an ID

describe('the ID plan keeps n queues apart (RFC 6864 §4.1)', () => {
  const c = parseConfig(FOUR_PEERS);
  // Shared by every queue, as the daemon hands the main thread's starts to its workers. 65535
  // and 65530 wrap at once; 0 and 12345 wrap later (within the arithmetic run).
  const STARTS = [65535, 65530, 0, 12345];
  /** Packets each queue really encapsulates toward each peer (IDs read from the wire). */
  const REAL = 1500;
  /** Packets per queue and peer the sequence is followed for in all. */
  const TOTAL = 2 * 65536;

  /** Encapsulate REAL packets per peer, round robin; per peer the wire IDs in order; checks each packet. */
  function realIds(tunnel: Tunnel, peers: Peer[]): { ids: number[][]; problems: string[] } {
    const out = new PacketResult();
    const bufs = DSTS.map(packetTo);
    const ids: number[][] = peers.map(() => []);
    const problems: string[] = [];
    for (let k = 0; k < REAL; k++) {
      bufs.forEach((buf, i) => {
        const before = peers[i]!.nextId;
        const v = tunnel.encapsulate(buf, 20, 28, out);
        if (v !== Verdict.forward || out.peer !== peers[i] || out.offset !== 0) {
          problems.push(`packet ${k} to peer ${i}: verdict ${v}`);
          return;
        }
        const id = buf.readUInt16BE(4);
        // The ID on the wire is the peer's nextId before the call; the header still verifies.
        if (id !== before) problems.push(`packet ${k} to peer ${i}: wire ID ${id}, nextId was ${before}`);
        if (refChecksum(buf, 0, 20) !== 0) problems.push(`packet ${k} to peer ${i}: bad header checksum`);
        if (buf.readInt32BE(16) !== ENDPOINTS[i]) problems.push(`packet ${k} to peer ${i}: wrong outer destination`);
        ids[i]!.push(id);
      });
    }
    return { ids, problems };
  }

  for (let n = 1; n <= 8; n++) {
    it(`${n} queue(s): real encapsulation follows the plan, and no ID is shared over ${TOTAL} packets per queue`, () => {
      const step = refStep(n);
      const period = 0x10000 / step;
      const queues = Array.from({ length: n }, (_, q) => buildTunnel(c, 1480, queueIds(STARTS.length, q, n, STARTS)));

      // (a) Real packets: the wire IDs are starts[i] + q + k * step, mod 2^16.
      const seqs: number[][][] = []; // [queue][peer] -> IDs of packets 0..TOTAL-1
      queues.forEach(({ tunnel, peers }, q) => {
        expect(peers.every((p) => p.idStep === step)).toBe(true);
        const { ids, problems } = realIds(tunnel, peers);
        expect(problems.slice(0, 5), `queue ${q}`).toEqual([]);
        ids.forEach((seq, i) => {
          const model = seq.map((_, k) => (STARTS[i]! + q + k * step) % 0x10000);
          expect(seq, `queue ${q} peer ${i}`).toEqual(model);
        });
        // (b) The rest of the run by arithmetic, continuing from the real peers' nextId.
        seqs.push(
          ids.map((seq, i) => {
            const all = seq.slice();
            let x = peers[i]!.nextId;
            while (all.length < TOTAL) {
              all.push(x);
              x = (x + peers[i]!.idStep) & 0xffff;
            }
            return all;
          }),
        );
      });

      for (let i = 0; i < STARTS.length; i++) {
        // No two queues ever send the same ID toward peer i.
        const owner = new Int8Array(0x10000).fill(-1);
        let shared = 0;
        for (let q = 0; q < n; q++) {
          for (const id of seqs[q]![i]!) {
            if (owner[id] === -1) owner[id] = q;
            else if (owner[id] !== q) shared++;
          }
        }
        expect(shared, `peer ${i}: IDs used by two queues`).toBe(0);
        // Between them the queues use n residue classes mod step: n * period IDs in all.
        expect(owner.reduce((s, o) => s + (o === -1 ? 0 : 1), 0)).toBe(n * period);

        // Each queue repeats an ID only after `period` packets, and then exactly after it.
        for (let q = 0; q < n; q++) {
          const last = new Int32Array(0x10000).fill(-1);
          let early = 0;
          let late = 0;
          let repeats = 0;
          seqs[q]![i]!.forEach((id, k) => {
            if (last[id] !== -1) {
              repeats++;
              if (k - last[id]! < period) early++;
              if (k - last[id]! > period) late++;
            }
            last[id] = k;
          });
          expect([early, late], `queue ${q} peer ${i}`).toEqual([0, 0]);
          expect(repeats).toBe(TOTAL - period);
        }
      }
    });
  }
});

// ---------------------------------------------------------------- 4. icmpLimits, createQueue

describe('icmpLimits', () => {
  it('each of n queues gets rate / n and burst / n, rounded down, at least 1', () => {
    const c = parseConfig(`${FOUR_PEERS}icmp: { rate: 1000, burst: 50 }\n`);
    expect(icmpLimits(c, 1)).toEqual({ icmpRate: 1000, icmpBurst: 50 });
    expect(icmpLimits(c, 3)).toEqual({ icmpRate: 333, icmpBurst: 16 });
    expect(icmpLimits(c, 64)).toEqual({ icmpRate: 15, icmpBurst: 1 });
    expect(icmpLimits(parseConfig(`${FOUR_PEERS}icmp: { rate: 1, burst: 1 }\n`), 8)).toEqual({ icmpRate: 1, icmpBurst: 1 });
  });
});

describe('createQueue', () => {
  const fifos = new Fifos('ipipd-queue-');
  fifos.setUp();
  afterAll(() => {
    fifos.closeAll();
    fifos.remove();
  });

  for (const offload of [false, true]) {
    it(`queue 1 of 3 (offload ${offload}): Peers on its ID plan, batch from the config, warmed up into the discard fd only, figures zero`, () => {
      const c = parseConfig(`${FOUR_PEERS}io: { batch: 32, offload: ${offload} }\n`);
      const starts = [100, 65535, 0, 40000];
      const tunFd = fifos.fifo();
      const rawFd = fifos.fifo();
      const io = new RecordingIo();
      const t0 = performance.now();
      const q = createQueue(c, {
        queue: 1, queues: 3, idStarts: starts, tunFd, rawFd, tunMtu: 1480, underlayMax: 1540, udpGro: offload,
        icmpSource: ip('198.51.100.0'), log: createLogger('silent'), io,
      });
      const call = performance.now() - t0;
      try {
        expect(q.idStarts).toEqual(starts);
        expect(q.tunnel).toBe(q.dataplane.tunnel);
        expect(q.tunnel.peers).toEqual(q.peers);
        // The warm-up put every ID back where the plan starts it: start + queue, step 4.
        expect(q.peers.map((p) => [p.nextId, p.idStep])).toEqual(starts.map((s) => [(s + 1) & 0xffff, 4]));
        expect(q.peers.map((p) => p.mtu)).toEqual([1480, 1400, 1480, 1480]);
        expect(q.dataplane.batchSize).toBe(32);
        expect(q.dataplane.offload).toBe(offload);
        expect(q.warmUp.packets).toBeGreaterThan(0);
        // What the start-up log reports: the warm-up in whole ms and the GC after it in tenths,
        // both timed within this call. No bound on how fast: that is not its contract.
        expect(Number.isInteger(q.warmUp.ms)).toBe(true);
        expect(q.warmUp.ms).toBeLessThanOrEqual(Math.round(call));
        expect(q.warmUp.gcMs).toBeLessThanOrEqual(call);
        expect(io.calls.length).toBeGreaterThan(0);
        expect(io.calls.filter((x) => x.fd !== io.DISCARD_FD || x.failed !== 0)).toEqual([]);
        const snap = queueSnapshot(q.dataplane.figures);
        expect([...snap.counters, ...snap.drops].every((v) => v === 0)).toBe(true);
        expect(snap.peers.every((p) => Object.values(p).every((v) => v === 0))).toBe(true);
        expect(snap.lastErrors).toEqual({});
        // Not started: nothing reads the FIFOs, and nothing was written to them.
        expect(drain(tunFd)).toBe('EAGAIN');
        expect(drain(rawFd)).toBe('EAGAIN');
      } finally {
        q.dataplane.close();
      }
    });
  }

  it('queue 0 without starts draws them, one per peer, and hands them back for the workers', () => {
    const c = parseConfig(FOUR_PEERS);
    const q = createQueue(c, {
      queue: 0, queues: 2, tunFd: fifos.fifo(), rawFd: fifos.fifo(), tunMtu: 1480, underlayMax: 1540, udpGro: false,
      icmpSource: 1, log: createLogger('silent'), io: new RecordingIo(),
    });
    try {
      expect(q.idStarts).toHaveLength(4);
      expect(q.peers.map((p) => [p.nextId, p.idStep])).toEqual(q.idStarts.map((s) => [s, 2]));
    } finally {
      q.dataplane.close();
    }
  });
});
