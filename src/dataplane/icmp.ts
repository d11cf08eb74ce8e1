/**
 * ICMP on the data path, both kinds:
 *   1. `IcmpErrors`, the ICMP errors ipipd originates (too big with DF, inner TTL 0, and what
 *      is relayed below): `queue` checks RFC 1122 §3.2.2 (never about an ICMP error, a
 *      broadcast, a fragment after the first...) and a token bucket (`takeToken`, like Linux's
 *      icmp_ratelimit), writes the message into the ICMP-out slab, and `flush` writes the
 *      queued ones into the TUN once per batch, from the TUN's address.
 *   2. `IcmpReceiver`, ICMP errors from the underlay about our outer packets (`onIcmpBatch`, the
 *      raw ICMP socket's batch handler): they update the peer's soft state (RFC 2003 §5: path
 *      MTU in `learnPathMtu`, reachability in the peer figures) and are relayed to the inner
 *      sender as the RFC 2003 §4 table says (`relay`).
 * In offload mode an error written into the TUN gets a zero virtio_net_hdr (slabs.ts).
 */
import type { Logger } from 'pino';
import {
  ENCAP_FOU,
  FOU_OVERHEAD,
  ICMP_DEST_UNREACH,
  IcmpQuote,
  MIN_TUNNEL_MTU,
  UNREACH_FRAG_NEEDED,
  UNREACH_HOST,
  UnderlayIcmp,
  classifyUnderlayIcmp,
  getSrc,
  mayAnswerWithIcmpError,
  plateauBelow,
  writeIcmpError,
  type Peer,
  type Tunnel,
} from '../ipip/index.js';
import { formatIPv4 } from '../routing/prefix.js';
import { C, type Figures } from './figures.js';
import type { Ports } from './io.js';
import { errnoLabel } from '../tun/native.js';
import { HEADROOM, ICMP_OUT_HEAD, ICMP_OUT_STRIDE, ICMP_QUEUE, ICMP_SLOT, type Slabs } from './slabs.js';
import { TRACE_ICMP_NOT_OURS, TRACE_ICMP_NOT_RELAYED, TRACE_ICMP_RELAYED, TRACE_ICMP_UNRELAYABLE, Tracer } from './trace.js';

/** The rate limit of `IcmpErrors`: per second at most, and the burst allowed. */
export interface IcmpLimits {
  icmpRate: number;
  icmpBurst: number;
}

export class IcmpErrors {
  /** ICMP errors queued for the next flush. */
  count = 0;
  /** Identification of the next error's IPv4 header. */
  id = 0;
  private tokens: number;
  private refilledAt: number;

  constructor(
    private readonly slabs: Slabs,
    private readonly figures: Figures,
    private readonly ports: Ports,
    /** Source address of the errors (the TUN's address, int32). */
    private readonly source: number,
    private limits: IcmpLimits,
    private readonly now: () => number,
  ) {
    this.tokens = limits.icmpBurst;
    this.refilledAt = now();
  }

  /** A config reload's new rate and burst (control path, between batches); tokens above the new burst are cut. */
  setLimits(limits: IcmpLimits): void {
    this.limits = { icmpRate: limits.icmpRate, icmpBurst: limits.icmpBurst };
    if (this.tokens > limits.icmpBurst) this.tokens = limits.icmpBurst;
  }

  /**
   * Queue an ICMP error about the datagram `buf[off, off+len)` to its source, from the TUN's
   * address. Returns false (and counts why) when RFC 1122 forbids it or the rate limit says no.
   */
  queue(type: number, code: number, rest: number, buf: Buffer, off: number, len: number): boolean {
    const counters = this.figures.counters;
    if (!mayAnswerWithIcmpError(buf, off, len)) {
      counters[C.icmp_not_sent]++;
      return false;
    }
    if (this.count >= ICMP_QUEUE || !this.takeToken()) {
      counters[C.icmp_rate_limited]++;
      return false;
    }
    const s = this.slabs;
    const slot = this.count++;
    const at = slot * ICMP_OUT_STRIDE + ICMP_OUT_HEAD;
    // In offload mode the write starts at the (zero) virtio_net_hdr before the message.
    s.icmpOutLens[slot] = at - s.icmpOutOffs[slot] + writeIcmpError(s.icmpOutSlab, at, type, code, rest, this.source, getSrc(buf, off), this.id, buf, off, len);
    this.id = (this.id + 1) & 0xffff;
    return true;
  }

  /** Token bucket: `icmpRate` per second, up to `icmpBurst` at once. */
  private takeToken(): boolean {
    if (this.tokens < 1) {
      const now = this.now();
      this.tokens = Math.min(this.limits.icmpBurst, this.tokens + ((now - this.refilledAt) * this.limits.icmpRate) / 1000);
      this.refilledAt = now;
      if (this.tokens < 1) return false;
    }
    this.tokens--;
    return true;
  }

  /** Write the queued errors into the TUN (one write(2) each) and empty the queue. */
  flush(): void {
    const n = this.count;
    this.count = 0;
    const { ports, slabs, figures } = this;
    const written = ports.io.writeTun(ports.tun, slabs.icmpOutSlab, slabs.icmpOutOffs, slabs.icmpOutLens, n, ports.res);
    figures.counters[C.icmp_sent] += written;
    if (ports.res[0] > 0) {
      figures.counters[C.icmp_not_sent] += ports.res[0];
      figures.lastErrors.tunWrite = errnoLabel(ports.res[1]);
    }
  }

  /**
   * After the warm-up (warmup.ts): an empty queue, the ID `id` as it was, a full bucket. Each
   * field is stored only if it changed (warmup.ts says why).
   */
  settle(id: number): void {
    if (this.count !== 0) this.count = 0;
    if (this.id !== id) this.id = id;
    if (this.tokens !== this.limits.icmpBurst) this.tokens = this.limits.icmpBurst;
    this.refilledAt = this.now();
  }
}

export class IcmpReceiver {
  private readonly quote = new IcmpQuote();
  /** FOU: the UDP port our FOU packets go to (quotes of UDP to it are ours too), or -1 without FOU. */
  fouPort = -1;

  constructor(
    public tunnel: Tunnel,
    private readonly slabs: Slabs,
    private readonly figures: Figures,
    private readonly errors: IcmpErrors,
    private readonly log: Logger,
    private readonly now: () => number,
    /** Called after a path MTU learned from underlay ICMP lowered `peer.mtu`. */
    private readonly onPathMtu: ((peer: Peer) => void) | undefined,
    /** Live tracing (trace.ts): each message notes what became of it; sampled after the batch while on. */
    private readonly tracer: Tracer = new Tracer(1),
  ) {}

  /** The raw ICMP socket's batch handler: ICMP messages in slots 0..n-1 of the ICMP-in slab. */
  onIcmpBatch(n: number): void {
    const { quote, figures, tunnel } = this;
    const { icmpInSlab, icmpInLens } = this.slabs;
    const counters = figures.counters;
    // Underlay ICMP is rare (not the hot path): each message notes its outcome for tracing.
    const iv = this.tracer.icmpVerdicts;
    for (let i = 0; i < n; i++) {
      counters[C.underlay_icmp_rx]++;
      const off = i * ICMP_SLOT;
      const kind = classifyUnderlayIcmp(icmpInSlab, off, icmpInLens[i], tunnel.local, quote, this.fouPort);
      const peer = kind === UnderlayIcmp.notOurs ? null : tunnel.peerByEndpoint(quote.endpoint);
      // A quote of FOU is about a FOU peer's packets, a quote of protocol 4 about an IPIP peer's.
      if (peer === null || quote.fou !== (peer.encap === ENCAP_FOU)) {
        counters[C.icmp_not_ours]++;
        iv[i] = TRACE_ICMP_NOT_OURS;
        continue;
      }
      if (kind === UnderlayIcmp.noRelay) {
        counters[C.icmp_not_relayed]++;
        iv[i] = TRACE_ICMP_NOT_RELAYED;
        continue;
      }
      iv[i] = quote.innerLength === 0 ? TRACE_ICMP_UNRELAYABLE : TRACE_ICMP_RELAYED;
      if (kind === UnderlayIcmp.fragNeeded) {
        this.learnPathMtu(peer, off);
        if (quote.innerLength === 0) counters[C.icmp_unrelayable]++;
        // Only a sender that asked for DF wants to hear it; without DF we fragment ourselves.
        else if (!quote.innerDf) {
          counters[C.icmp_not_relayed]++;
          iv[i] = TRACE_ICMP_NOT_RELAYED;
        } else this.relay(UNREACH_FRAG_NEEDED, tunnel.mtuFor(peer));
        continue;
      }
      // Net/host/protocol unreachable, time exceeded: the inner sender hears Host Unreachable.
      if (quote.type === ICMP_DEST_UNREACH && quote.code <= 2) {
        figures.peers.unreachableAt[peer.index] = this.now();
        figures.peers.unreachableReason[peer.index] = `${UNREACH_NAMES[quote.code]} from ${formatIPv4(getSrc(icmpInSlab, off))}`;
      }
      if (quote.innerLength === 0) counters[C.icmp_unrelayable]++;
      else this.relay(UNREACH_HOST, 0);
    }
    if (this.tracer.on) this.tracer.sampleIcmp(icmpInSlab, icmpInLens, ICMP_SLOT, n);
    if (this.errors.count > 0) this.errors.flush();
  }

  /** Fragmentation Needed about our outer packets to `peer`: lower its tunnel MTU (RFC 1191). */
  private learnPathMtu(peer: Peer, icmpOff: number): void {
    const q = this.quote;
    // A router that does not say (0), or says something no smaller than what it refused, is
    // answered with the RFC 1191 §5 plateau below the refused length.
    const pmtu = q.nextHopMtu === 0 || q.nextHopMtu >= q.outerLength ? plateauBelow(q.outerLength) : q.nextHopMtu;
    const tunnelMtu = pmtu - HEADROOM - (q.fou ? FOU_OVERHEAD : 0);
    if (tunnelMtu < MIN_TUNNEL_MTU || tunnelMtu >= peer.mtu) return;
    const from = peer.mtu;
    peer.mtu = tunnelMtu;
    peer.pmtuLearnedAt = this.now();
    this.figures.counters[C.pmtu_updates]++;
    this.onPathMtu?.(peer);
    // Each update lowers the MTU, so there are few of them: no rate limit needed.
    this.log.info({ peer: peer.name, from, to: tunnelMtu, router: formatIPv4(getSrc(this.slabs.icmpInSlab, icmpOff)) }, 'path MTU toward peer lowered');
  }

  /** Relay the quoted inner datagram's error to its sender as Destination Unreachable `code`. */
  private relay(code: number, rest: number): void {
    const q = this.quote;
    if (this.errors.queue(ICMP_DEST_UNREACH, code, rest, this.slabs.icmpInSlab, q.innerOffset, q.innerLength)) this.figures.counters[C.icmp_relayed]++;
  }
}

const UNREACH_NAMES = ['net unreachable', 'host unreachable', 'protocol unreachable'];
