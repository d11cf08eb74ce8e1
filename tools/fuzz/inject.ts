/**
 * The fuzzer's injector, run inside a namespace by tools/fuzz/run.ts:
 *
 *   node dist/tools/fuzz/inject.js --face tun|peer|stranger --dev DEV [--mac MAC] --count N
 *        --seed S --rate PPS --inner-src A --inner-dst A --own-block A --own-mask N --local A
 *        --peer A --mtu N [--avoid A,A,...]
 *
 * Sends N packets (tools/fuzz/packets.ts) out of device DEV with the addon's AF_PACKET socket
 * (`openPacket`/`sendPacket`, up to 256 a system call, one batch a millisecond), paced to PPS. On the TUN face DEV is ipipd's
 * TUN itself: a packet sent on it goes onto the device's transmit queue, which is what ipipd
 * reads, with no route lookup, no forwarding and no netfilter in between (the host stack
 * filters nothing first). On an underlay face DEV is the peer host's underlay device and MAC
 * the daemon's: the frames arrive on the daemon's underlay like any other, from the peer's
 * address (`peer`) or from random strangers (`stranger`).
 *
 * A packet the kernel refuses at the send (ENOBUFS at a full queue, ...) is not counted as
 * injected and another one is made, so exactly N go out. Prints one JSON line:
 * {injected, sendFailures, lastErrno, cases: {case: count}}.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { native } from '../../src/tun/native.js';
import { CASES, type Plan, prng, strangerAddress, tunPacket, underlayPacket } from './packets.js';

/** Most packets a system call; fewer at low rates, so that a burst does not overrun the TUN's queue. */
const MAX_BATCH = 256;
const SLOT = 2048;

function ip(s: string): number {
  const p = s.split('.').map(Number);
  return ((p[0]! << 24) | (p[1]! << 16) | (p[2]! << 8) | p[3]!) | 0;
}

const { values: v } = parseArgs({
  options: {
    face: { type: 'string' }, dev: { type: 'string' }, mac: { type: 'string', default: '00:00:00:00:00:00' },
    count: { type: 'string' }, seed: { type: 'string' }, rate: { type: 'string' },
    'inner-src': { type: 'string' }, 'inner-dst': { type: 'string' }, 'own-block': { type: 'string' }, 'own-mask': { type: 'string' },
    local: { type: 'string' }, peer: { type: 'string' }, mtu: { type: 'string' }, avoid: { type: 'string', default: '' },
  },
});
const face = v.face!;
const count = Number(v.count);
const rate = Number(v.rate);
const BATCH = Math.max(16, Math.min(MAX_BATCH, Math.round(rate / 1000)));
const plan: Plan = {
  innerSrc: ip(v['inner-src']!), innerDst: ip(v['inner-dst']!), ownBlock: ip(v['own-block']!),
  ownMask: Number(v['own-mask']) === 0 ? 0 : -1 << (32 - Number(v['own-mask'])),
  local: ip(v.local!), peer: ip(v.peer!), mtu: Number(v.mtu),
};
const avoid = v.avoid!.split(',').filter(Boolean).map(ip);
const r = prng(Number(v.seed));

const ifindex = Number(readFileSync(`/sys/class/net/${v.dev}/ifindex`, 'utf8'));
const mac = v.mac!.split(':').map((h) => parseInt(h, 16));
const hops = new Int32Array([ifindex, (mac[0]! << 24) | (mac[1]! << 16) | (mac[2]! << 8) | mac[3]!, (mac[4]! << 24) | (mac[5]! << 16)]);
const fd = native.openPacket(4 << 20);

const slab = Buffer.alloc(MAX_BATCH * SLOT);
const offs = new Int32Array(BATCH);
const lens = new Int32Array(BATCH);
const hopOf = new Int32Array(BATCH);
const kinds = new Int32Array(BATCH);
const res = new Int32Array(2);
const kind = new Int32Array(1);
const cases = new Float64Array(CASES.length);
for (let i = 0; i < BATCH; i++) offs[i] = i * SLOT;

let injected = 0;
let failures = 0;
let lastErrno = 0;
let id = 0;
const t0 = Date.now();
while (injected < count) {
  const n = Math.min(BATCH, count - injected);
  for (let i = 0; i < n; i++) {
    id = (id + 1) & 0xffff;
    if (face === 'tun') lens[i] = tunPacket(slab, offs[i]!, id, plan, r, kind);
    else lens[i] = underlayPacket(slab, offs[i]!, id, face === 'peer' ? plan.peer : strangerAddress(r, avoid), plan, r, kind);
    kinds[i] = kind[0]!;
  }
  const sent = native.sendPacket(fd, slab, offs, lens, hopOf, n, res, hops);
  injected += sent;
  if (res[0]! > 0) {
    failures += res[0]!;
    lastErrno = res[1]!;
  }
  for (let i = 0; i < n; i++) if (lens[i]! > 0) cases[kinds[i]!]++;
  // Pace: wait until the schedule catches up with what was sent (and after a refused batch).
  const ahead = (injected / rate) * 1000 - (Date.now() - t0);
  if (ahead > 1 || sent < n) await new Promise((ok) => setTimeout(ok, Math.max(1, ahead)));
}
native.close(fd);
process.stdout.write(JSON.stringify({ injected, sendFailures: failures, lastErrno, cases: Object.fromEntries(CASES.map((c, i) => [c, cases[i]])) }) + '\n');
