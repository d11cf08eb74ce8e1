/**
 * Live tracing's control half (`ipipd trace`, README "Tracing"): the control socket's `trace`
 * command. A client's request names a filter (`reason`, `peer`) and a `count`; the daemon answers
 * with JSON lines: a header (`{"tracing": ...}`), then one line per sampled packet, a
 * `{"skipped": n}` line when samples were left out by the rate bound, until `count` packets were
 * sent or the client hangs up. A client that goes away only shows when the daemon writes to it
 * (a Unix socket's end-of-file looks the same as a client that half-closed after its request):
 * so a session that got nothing for `HEARTBEAT_MS` is sent an empty object `{}`, which fails
 * once the client is gone, and the session ends.
 *
 * Flow, in the order of this file: `parseTraceRequest` (the request's filter, or
 * ERR_CONTROL_REQUEST), `traceLine` (a record as the client gets it), `TraceHub`: `handle` (a
 * new session), `reconfigure` (the data path's samplers on, with the one session's filter or
 * none when several trace at once, or off when the last one left; the queue workers are told
 * by message), `deliver` (records to the sessions that want them; queue 0's ring is drained
 * here every TRACE_DRAIN_MS, the workers post theirs), `close` (shutdown ends every session).
 */
import { formatIPv4 } from '../routing/prefix.js';
import { Verdict, VERDICT_NAMES } from '../ipip/verdict.js';
import {
  DIR_RECEIVE,
  DIR_SEND,
  TRACE_ANY,
  TRACE_ANY_DROP,
  TRACE_DRAIN_MS,
  TRACE_FRAGMENTED,
  TRACE_ICMP,
  TRACE_ICMP_NOT_OURS,
  TRACE_RATE,
  TRACE_SEGMENTED,
  traceWanted,
  type TraceFilter,
  type TraceRecord,
  type Tracer,
} from '../dataplane/trace.js';
import { STREAMING, type ControlConnection, type ControlRequest } from './control.js';
import { IpipdError } from './errors.js';
import { isoTime } from './iso-time.js';

/** What `--reason` takes besides a drop reason. */
export const TRACE_REASONS = ['any', 'drop', 'forward', 'icmp', ...VERDICT_NAMES.filter((n) => n !== 'forward')] as const;

/** What became of an underlay ICMP message (TRACE_ICMP_NOT_OURS.. in order), named as its counter. */
const ICMP_OUTCOMES = ['icmp_not_ours', 'icmp_not_relayed', 'icmp_unrelayable', 'icmp_relayed'];

/** A peer a trace may name: one of the daemon's peers now (from the config, a reload or the kernel's routes). */
export interface TracePeer {
  readonly name: string;
  readonly endpoint: { readonly value: number };
}

/** Peers named in the answer to a `--peer` that is not one: enough to spot a typo, not a mesh's every node. */
const PEERS_LISTED = 20;

/** The request's filter and count; ERR_CONTROL_REQUEST for what does not fit the peers running now. */
export function parseTraceRequest(req: ControlRequest, peers: readonly TracePeer[]): { filter: TraceFilter; count: number } {
  const reason = req.reason ?? 'any';
  let verdict: number;
  if (reason === 'any') verdict = TRACE_ANY;
  else if (reason === 'drop') verdict = TRACE_ANY_DROP;
  else if (reason === 'icmp') verdict = TRACE_ICMP;
  else if (typeof reason === 'string' && Object.hasOwn(Verdict, reason)) verdict = Verdict[reason as keyof typeof Verdict];
  else throw new IpipdError('ERR_CONTROL_REQUEST', `trace: unknown reason ${JSON.stringify(reason)}; one of ${TRACE_REASONS.join(', ')}`);
  let peerEndpoint = 0;
  if (req.peer !== undefined) {
    const p = peers.find((x) => x.name === req.peer);
    if (!p) {
      const names = peers.slice(0, PEERS_LISTED).map((x) => x.name).join(', ');
      const more = peers.length > PEERS_LISTED ? ` and ${peers.length - PEERS_LISTED} more` : '';
      throw new IpipdError('ERR_CONTROL_REQUEST', `trace: no peer ${JSON.stringify(req.peer)}; peers: ${names || 'none'}${more}`);
    }
    peerEndpoint = p.endpoint.value;
  }
  const count = req.count ?? 0;
  if (typeof count !== 'number' || !Number.isInteger(count) || count < 0) throw new IpipdError('ERR_CONTROL_REQUEST', 'trace: count must be a whole number (0: until the client hangs up)');
  return { filter: { verdict, peerEndpoint }, count };
}

const PROTOCOLS: Record<number, string> = { 1: 'icmp', 6: 'tcp', 17: 'udp' };

/** A record as the client gets it: dotted quads, names (verdict, direction, protocol). */
export interface TraceLine {
  time: string;
  queue: number;
  direction: 'send' | 'receive' | 'icmp';
  verdict: string;
  outer: { src: string; dst: string } | null;
  src: string | null;
  dst: string | null;
  proto: string | null;
  sport: number | null;
  dport: number | null;
  length: number;
}

export function traceLine(r: TraceRecord): TraceLine {
  const v = r.verdict === TRACE_FRAGMENTED ? 'fragmented' : r.verdict === TRACE_SEGMENTED ? 'segmented' : (VERDICT_NAMES[r.verdict] ?? ICMP_OUTCOMES[r.verdict - TRACE_ICMP_NOT_OURS] ?? String(r.verdict));
  const ip = r.proto !== 0 || r.src !== 0 || r.dst !== 0;
  const ports = r.proto === 6 || r.proto === 17;
  return {
    time: isoTime(r.time),
    queue: r.queue,
    direction: r.dir === DIR_SEND ? 'send' : r.dir === DIR_RECEIVE ? 'receive' : 'icmp',
    verdict: v,
    outer: r.outerSrc !== 0 || r.outerDst !== 0 ? { src: formatIPv4(r.outerSrc), dst: formatIPv4(r.outerDst) } : null,
    src: ip ? formatIPv4(r.src) : null,
    dst: ip ? formatIPv4(r.dst) : null,
    proto: ip ? (PROTOCOLS[r.proto] ?? String(r.proto)) : null,
    sport: ports ? r.sport : null,
    dport: ports ? r.dport : null,
    length: r.length,
  };
}

/** How long a session may go without a line before it is sent `{}` (see above). */
const HEARTBEAT_MS = 1000;

interface Session {
  filter: TraceFilter;
  /** When the session was last sent anything (ms). */
  lastSent: number;
  /** Records still to send; Infinity: until the client hangs up. */
  left: number;
  conn: ControlConnection;
}

/** What the hub drives: queue 0's sampler, and the queue workers (told by message); and the peers a trace may name. */
export interface TraceTargets {
  peers(): readonly TracePeer[];
  tracer(): Tracer | undefined;
  workers(): { count: number; setTrace(f: TraceFilter | null): void; onTrace: ((records: TraceRecord[], skipped: number) => void) | undefined } | undefined;
}

export class TraceHub {
  private readonly sessions = new Set<Session>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly targets: TraceTargets) {}

  /** The `trace` command: a new session on `conn`. */
  handle(req: ControlRequest, conn: ControlConnection): typeof STREAMING {
    const { filter, count } = parseTraceRequest(req, this.targets.peers());
    const s: Session = { filter, left: count === 0 ? Infinity : count, conn, lastSent: Date.now() };
    this.sessions.add(s);
    conn.onClose(() => this.remove(s));
    conn.send({ tracing: { reason: req.reason ?? 'any', peer: req.peer ?? null, count, ratePerQueue: TRACE_RATE, queues: 1 + (this.targets.workers()?.count ?? 0), sessions: this.sessions.size } });
    this.reconfigure();
    return STREAMING;
  }

  /** Sessions tracing now. */
  get active(): number {
    return this.sessions.size;
  }

  private remove(s: Session): void {
    if (this.sessions.delete(s)) this.reconfigure();
  }

  /** The samplers on with the one session's filter (several: everything, each session filters), or off. */
  private reconfigure(): void {
    const tracer = this.targets.tracer();
    const workers = this.targets.workers();
    if (this.sessions.size === 0) {
      tracer?.configure(null);
      workers?.setTrace(null);
      if (workers) workers.onTrace = undefined;
      if (this.timer) clearInterval(this.timer);
      this.timer = undefined;
      return;
    }
    const only = this.sessions.size === 1 ? [...this.sessions][0]!.filter : { verdict: TRACE_ANY, peerEndpoint: 0 };
    tracer?.configure(only);
    workers?.setTrace(only);
    if (workers) workers.onTrace = (records, skipped) => this.deliver(records, skipped);
    if (tracer && !this.timer) {
      this.timer = setInterval(() => {
        const { records, skipped } = tracer.drain();
        this.deliver(records, skipped);
        this.heartbeat();
      }, TRACE_DRAIN_MS);
      this.timer.unref();
    }
  }

  /** Records (and a count of skipped ones) from a queue, to each session whose filter takes them. */
  deliver(records: readonly TraceRecord[], skipped: number): void {
    for (const s of [...this.sessions]) {
      if (skipped > 0 && this.sessions.size === 1) this.send(s, { skipped });
      for (const r of records) {
        if (s.left <= 0) break;
        if (!traceWanted(s.filter.verdict, s.filter.peerEndpoint, r.verdict, r.outerDst, r.outerSrc)) continue;
        this.send(s, traceLine(r));
        s.left--;
      }
      if (s.left <= 0) {
        s.conn.end();
        this.remove(s);
      }
    }
  }

  private send(s: Session, value: unknown): void {
    s.conn.send(value);
    s.lastSent = Date.now();
  }

  /** `{}` to each session idle for HEARTBEAT_MS: the write fails, and the session ends, once its client is gone. */
  private heartbeat(): void {
    const now = Date.now();
    for (const s of this.sessions) if (now - s.lastSent >= HEARTBEAT_MS) this.send(s, {});
  }

  /** Shutdown: end every session, samplers off. */
  close(): void {
    for (const s of this.sessions) s.conn.end();
    this.sessions.clear();
    this.reconfigure();
  }
}
