/**
 * Configuration: read once, validated once, then frozen (after fastify's
 * initial-config-validation.js). Flow, in the order of this file:
 *   1. the schema (zod), with defaults and no unknown keys at any level;
 *   2. cross-field rules the schema cannot express (unique peers, prefixes that would loop),
 *      run on what passed the schema even when something else did not (`partsThatParse`);
 *   3. `loadConfig` / `parseConfig`: YAML text -> a deep-frozen `Config`, or one IpipdError
 *      listing every problem, the schema's and the cross-field ones, each with its path
 *      (`peers[1].prefixes[0]: host bits set ...`);
 *   4. `asWritten` (the config back as a user writes it, for `check --json`) and `describeConfig`.
 * Nothing downstream reads raw config: addresses arrive here as text and leave as
 * `{ text, value }` with `value` the signed 32-bit int the data path uses.
 */
import { readFileSync } from 'node:fs';
import { parseDocument } from 'yaml';
import { z } from 'zod';
import { formatIPv4, formatPrefix, parseIPv4, parsePrefix, prefixContains, prefixesOverlap } from '../routing/prefix.js';
import { allFou, deepFreeze, fouInUse, tunOverhead } from './config-plain.js';
import { defaultControlSocket } from './control.js';
import { IpipdError, errnoName } from './errors.js';
import { clusterCheck, describeEncapMode } from './cross-subnet.js';

export interface Address {
  readonly text: string;
  /** Signed 32-bit int, network byte order as `readInt32BE` gives it. */
  readonly value: number;
}

export interface Prefix {
  readonly text: string;
  readonly addr: number;
  readonly len: number;
}

/** Most data-path queues (io.queues): one thread each, and each holds its own buffers. */
export const MAX_QUEUES = 8;

const address = z.string().transform((s, ctx): Address => {
  const v = parseIPv4(s);
  if (v === undefined) {
    ctx.addIssue({ code: 'custom', message: `not an IPv4 address: ${JSON.stringify(s)}` });
    return z.NEVER;
  }
  return { text: formatIPv4(v), value: v };
});

const prefix = z.string().transform((s, ctx): Prefix => {
  const p = parsePrefix(s);
  if (typeof p === 'string') {
    ctx.addIssue({ code: 'custom', message: p });
    return z.NEVER;
  }
  return { text: formatPrefix(p.addr, p.len), addr: p.addr, len: p.len };
});

/** An interface address: host bits may be set (198.51.100.1/25 is a fine address). */
const interfaceAddress = z.string().transform((s, ctx): Prefix => {
  const m = /^([^/]+)\/(\d{1,2})$/.exec(s);
  const a = m ? parseIPv4(m[1]!) : undefined;
  const len = m ? Number(m[2]) : NaN;
  if (a === undefined || !(len >= 0 && len <= 32)) {
    ctx.addIssue({ code: 'custom', message: `expected ADDRESS/LENGTH such as 198.51.100.0/32, got ${JSON.stringify(s)}` });
    return z.NEVER;
  }
  return { text: `${formatIPv4(a)}/${len}`, addr: a, len };
});

/**
 * The message of a union that failed: zod's own is "Invalid input", which says nothing about
 * what to write (`control.socket: true`, `encap.tos: af41`). Issues inside a member that did
 * match its type (a number out of range) keep their own message.
 */
function expected(what: string): (issue: { input?: unknown }) => string {
  return (issue) => `expected ${what}; got ${JSON.stringify(issue.input) ?? String(issue.input)}`;
}

const deviceName = z
  .string()
  .regex(/^[A-Za-z0-9_.-]{1,15}$/, 'a Linux interface name: 1-15 characters of A-Z a-z 0-9 _ . -')
  .refine((s) => s !== '.' && s !== '..', 'not a valid interface name');

const schema = z.strictObject({
  tun: z
    .strictObject({
      /** Name of the TUN device ipipd creates. */
      name: deviceName.default('ipip0'),
      /** Address put on the TUN (like Calico's tunl0 address); optional. */
      address: interfaceAddress.optional(),
      /** TUN MTU; default: underlay device MTU - 20 (RFC 2003 §5.1), - 28 when every peer uses FOU. */
      mtu: z.number().int().min(576).max(65515).optional(),
      /** TUN transmit queue length (packets); a full queue drops silently (only the device's tx_dropped counts it: `tun_kernel_tx_dropped`). */
      txqueuelen: z.number().int().min(1).max(1_000_000).default(1000),
    })
    .prefault({}),
  underlay: z.strictObject({
    /** This host's underlay address: the outer source, and what the raw socket is bound to. */
    address,
    /** The device holding that address; default: found from the address. */
    device: deviceName.optional(),
    /** Seconds a path MTU learned from ICMP is kept before trying the configured one again (RFC 1191 §6.3); 0 = forever. */
    pmtu_expires: z.number().int().min(0).max(86400).default(600),
    /**
     * How outer packets leave: `raw`, the raw IPv4 socket (the kernel routes each one, and the
     * host's netfilter OUTPUT rules apply); `packet`, an AF_PACKET socket straight to each peer's
     * next hop as the kernel's route and neighbour tables give it (no route lookup per packet,
     * faster; netfilter OUTPUT/POSTROUTING do not see them). Default raw (README, "Underlay
     * sending").
     */
    send: z.enum(['raw', 'packet']).default('raw'),
    /**
     * `routes.source: kernel`: the underlay CIDRs a kernel route's gateway must be inside to
     * become a peer (required in that mode); a route to any other gateway is refused.
     */
    allowed_endpoints: z.array(prefix).min(1).optional(),
  }),
  encap: z
    .strictObject({
      /** Outer TTL: a number, or `inherit` to copy the inner TTL. */
      ttl: z.union([z.number().int().min(1).max(255), z.literal('inherit')], { error: expected('a TTL from 1 to 255, or inherit') }).default(64),
      /** Outer TOS: `inherit` copies the inner DSCP, or a fixed DSCP byte (a multiple of 4); ECN always follows RFC 6040. */
      tos: z
        .union([z.number().int().min(0).max(255), z.literal('inherit')], {
          error: expected('inherit, or a DSCP byte from 0 to 252, a multiple of 4 (AF41 is 136, EF is 184)'),
        })
        .default('inherit'),
      /** Outer DF: `inherit` copies the inner DF bit (RFC 2003 §3.1 MUST), `always` sets it. */
      df: z.enum(['inherit', 'always']).default('inherit'),
      /**
       * Calico's ipipMode: `always` tunnels every peer; `cross-subnet` reaches a configured peer
       * whose endpoint is inside the underlay subnet (`subnet`) by a plain route via that
       * endpoint on the underlay device, and tunnels the others (src/daemon/plain-routes.ts).
       */
      mode: z.enum(['always', 'cross-subnet']).default('always'),
      /**
       * `cross-subnet`: the underlay subnet, as a CIDR containing underlay.address; default: the
       * prefix length underlay.address has on its device, as the kernel reports it.
       */
      subnet: prefix.optional(),
    })
    .prefault({}),
  peers: z
    .array(
      z.strictObject({
        name: z.string().regex(/^[A-Za-z0-9_.:-]{1,64}$/, 'letters, digits, _ . : - (1-64)'),
        /** The peer's underlay address: outer destination, and the only accepted outer source. */
        endpoint: address,
        /** Inner prefixes the peer owns: routed to it, and the only inner sources accepted from it. */
        prefixes: z.array(prefix).min(1),
        /** Tunnel MTU toward this peer when its path is known to be smaller than ours; default: the TUN MTU. */
        mtu: z.number().int().min(68).max(65515).optional(),
        /** How packets to and from this peer travel: `ipip` (protocol 4, RFC 2003) or `fou` (IPIP over UDP, Linux FOU; README "FOU"). */
        encap: z.enum(['ipip', 'fou']).default('ipip'),
      }),
    )
    // At least one unless routes.source is kernel (sourceCheck).
    .default([]),
  /** FOU, IPIP over UDP (README "FOU"): used by peers with `encap: fou`. */
  fou: z
    .strictObject({
      /** UDP port FOU packets go to, and the one ipipd receives them on (Linux: `ip fou add port 5555 ipproto 4`). */
      port: z.number().int().min(1).max(65535).default(5555),
      /**
       * Source port of the FOU packets ipipd sends: `auto`, one of `source_ports` ephemeral ports
       * picked by a hash of the inner flow (like Linux's `encap-sport auto`), or a fixed port.
       */
      source_port: z.union([z.literal('auto'), z.number().int().min(1).max(65535)], { error: expected('auto, or a UDP port from 1 to 65535') }).default('auto'),
      /** `source_port: auto`: how many source ports (one UDP socket each) the flows are spread over. */
      source_ports: z.number().int().min(1).max(64).default(8),
      /** The encap of peers learned from kernel routes (`routes.source: kernel`). */
      kernel_peers: z.enum(['ipip', 'fou']).default('ipip'),
      /** UDP_SEGMENT on send and UDP_GRO on receive where the kernel has them (each falls back by itself). */
      offload: z.boolean().default(true),
    })
    .prefault({}),
  routes: z
    .strictObject({
      /** Install a kernel route into the TUN for every peer prefix (and remove it on exit). */
      install: z.boolean().default(true),
      /** Routing table id (254 = main). */
      table: z.number().int().min(1).max(0xfffffffe).default(254),
      /** Route metric; default none (0). */
      metric: z.number().int().min(0).max(0xffffffff).optional(),
      /**
       * Where peers and prefixes come from: `config` (the `peers` list), or `kernel` too: every
       * route of `table` into the TUN with a gateway inside `underlay.allowed_endpoints` makes
       * its gateway a peer owning its prefix (README "Live changes").
       */
      source: z.enum(['config', 'kernel']).default('config'),
      /**
       * This node's own pod blocks: a blackhole route each (`blackhole <block> proto 77`), as
       * Calico installs, so an unassigned address in the block is not sent to the default
       * route; the pods' more specific routes still win. Removed at exit.
       */
      own_blocks: z.array(prefix).default([]),
    })
    .prefault({}),
  icmp: z
    .strictObject({
      /** ICMP errors ipipd sends into the TUN per second at most (token bucket, like Linux's icmp_ratelimit). */
      rate: z.number().int().min(1).max(1_000_000).default(1000),
      /** How many may go out at once before the rate applies. */
      burst: z.number().int().min(1).max(10_000).default(50),
    })
    .prefault({}),
  io: z
    .strictObject({
      /** Packets moved per system call at most (batch size), fixed for the device's life. */
      batch: z.number().int().min(1).max(1024).default(64),
      /** Raw socket receive and send buffer, bytes. */
      socket_buffer: z.number().int().min(65536).max(1 << 30).default(4 << 20),
      /**
       * Offload mode: open the TUN with a virtio_net_hdr, TSO and checksum offload; TCP
       * super-packets from the TUN are segmented before encapsulation, received TCP segments (and
       * UDP datagrams, on Linux 6.2+) are coalesced before they are written to the TUN (fewer
       * packets cross the kernel boundary).
       * On by default: TCP through the tunnel ~1.7x, nothing else worse (docs/performance.md).
       */
      offload: z.boolean().default(true),
      /**
       * Data-path queues: a multi-queue TUN (IFF_MULTI_QUEUE) and one raw socket per queue
       * (steered by inner flow), each queue forwarded by its own thread (the main thread
       * runs queue 0). More than 1 only pays on a host with spare cores: each end then uses up
       * to this many. Default 1 (docs/performance.md, "Multi-queue").
       */
      queues: z.number().int().min(1).max(MAX_QUEUES).default(1),
    })
    .prefault({}),
  control: z
    .strictObject({
      /**
       * Unix socket `ipipd status` reads; `false` disables it. Default
       * /run/ipipd/<tun.name>.<netns>.sock, netns being the network namespace's inode number, so
       * daemons in different namespaces with the same TUN name do not collide (defaultControlSocket).
       */
      socket: z.union([z.string().min(1), z.literal(false)], { error: expected('a socket path, or false to disable it') }).optional(),
    })
    .prefault({}),
  metrics: z
    .strictObject({
      /**
       * Where the Prometheus exporter listens (`host:port`, e.g. `127.0.0.1:9474`), serving
       * `/metrics` (src/daemon/metrics.ts); absent: no exporter.
       */
      listen: z
        .string()
        .regex(/^(\d{1,3}(\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'host:port, e.g. 127.0.0.1:9474 ([::1]:9474 for IPv6)')
        .refine((s) => {
          const port = Number(s.slice(s.lastIndexOf(':') + 1));
          return port >= 1 && port <= 65535;
        }, 'the port must be 1-65535')
        .optional(),
    })
    .prefault({}),
  log: z
    .strictObject({
      level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
      /** Seconds between counter summaries in the log when traffic changed; 0 = never. */
      stats_interval: z.number().min(0).max(86400).default(60),
    })
    .prefault({}),
});

type Parsed = z.output<typeof schema>;

export type Config = DeepReadonly<
  Omit<Parsed, 'control'> & {
    control: { socket: string | false };
  }
>;

type DeepReadonly<T> = T extends (infer U)[]
  ? readonly DeepReadonly<U>[]
  : T extends object
    ? { readonly [K in keyof T]: DeepReadonly<T[K]> }
    : T;

/** `peers[1].prefixes[0]` from zod's path array. */
export function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out === '' ? String(p) : `.${String(p)}`;
  return out || '(top level)';
}

interface Problem {
  path: string;
  message: string;
}

/**
 * What the rules across fields read. After schema errors some parts are missing (a peer that
 * failed its schema is `undefined`, at its index), and the rules check what is left, so one
 * message lists the schema's problems and these together.
 */
interface CrossInput {
  tun: Parsed['tun'] | undefined;
  underlay: Parsed['underlay'] | undefined;
  encap: Parsed['encap'] | undefined;
  routes: Parsed['routes'] | undefined;
  peers: readonly (Parsed['peers'][number] | undefined)[];
}

/** Every rule across fields, on what passed the schema: the sections a rule reads must all be there. */
function rulesAcross(c: CrossInput): Problem[] {
  const { underlay, encap, routes } = c;
  return [
    ...crossCheck(c),
    ...sourceCheck(c),
    // encap only brings encap.subnet: if encap failed, the own-block rules still run.
    ...(underlay && routes ? clusterCheck({ underlay, encap: encap ?? {}, routes, peers: c.peers }) : []),
  ];
}

/** Rules across fields: each returns problems with the path of the offending value. */
function crossCheck(c: CrossInput): Problem[] {
  const problems: Problem[] = [];
  const names = new Map<string, number>();
  const endpoints = new Map<number, number>();
  const seenPrefix = new Map<string, string>();
  const own = c.underlay?.address;
  const tunAddress = c.tun?.address;
  c.peers.forEach((p, i) => {
    if (p === undefined) return;
    const at = `peers[${i}]`;
    const dupName = names.get(p.name);
    if (dupName !== undefined) problems.push({ path: `${at}.name`, message: `duplicate peer name ${JSON.stringify(p.name)} (also peers[${dupName}])` });
    else names.set(p.name, i);
    const dupEp = endpoints.get(p.endpoint.value);
    if (dupEp !== undefined) problems.push({ path: `${at}.endpoint`, message: `endpoint ${p.endpoint.text} is also peers[${dupEp}]'s` });
    else endpoints.set(p.endpoint.value, i);
    if (own && p.endpoint.value === own.value)
      problems.push({ path: `${at}.endpoint`, message: `endpoint ${p.endpoint.text} is this host's own underlay.address` });
    p.prefixes.forEach((x, j) => {
      const pat = `${at}.prefixes[${j}]`;
      const prev = seenPrefix.get(x.text);
      if (prev !== undefined) problems.push({ path: pat, message: `prefix ${x.text} is already given at ${prev}` });
      else seenPrefix.set(x.text, pat);
      // RFC 2003 §3.2: routing an underlay address into the tunnel makes the tunnel recurse.
      if (own && prefixContains(x.addr, x.len, own.value))
        problems.push({ path: pat, message: `prefix ${x.text} contains this host's underlay address ${own.text}: the tunnel would loop` });
      for (const q of c.peers)
        if (q && prefixContains(x.addr, x.len, q.endpoint.value))
          problems.push({ path: pat, message: `prefix ${x.text} contains peer ${q.name}'s endpoint ${q.endpoint.text}: the tunnel would loop` });
      if (tunAddress && prefixesOverlap(x.addr, x.len, tunAddress.addr, 32))
        problems.push({ path: pat, message: `prefix ${x.text} contains the TUN's own address ${tunAddress.text}` });
    });
  });
  if (c.encap && typeof c.encap.tos === 'number' && (c.encap.tos & 3) !== 0)
    problems.push({ path: 'encap.tos', message: `the low 2 bits of ${c.encap.tos} are ECN, which always follows the inner packet (RFC 6040): give a DSCP byte, a multiple of 4 (e.g. ${c.encap.tos & 0xfc})` });
  c.peers.forEach((p, i) => {
    if (p?.encap === 'fou' && p.mtu !== undefined && p.mtu + 28 > 65535)
      problems.push({ path: `peers[${i}].mtu`, message: 'mtu + 28 bytes of FOU outer headers (IPv4 and UDP) must fit in 65535' });
  });
  if (c.tun?.mtu !== undefined && c.tun.mtu + 20 > 65535)
    problems.push({ path: 'tun.mtu', message: 'tun.mtu + 20 bytes of outer header must fit in 65535' });
  return problems;
}

/** The parts of a config that failed the schema which pass it on their own, for `crossCheck`. */
function partsThatParse(raw: unknown): CrossInput {
  const o = (raw !== null && typeof raw === 'object' ? raw : {}) as Record<string, unknown>;
  const part = <T>(s: z.ZodType<T>, v: unknown): T | undefined => {
    const r = s.safeParse(v);
    return r.success ? r.data : undefined;
  };
  const shape = schema.shape;
  return {
    tun: part(shape.tun, o.tun),
    underlay: part(shape.underlay, o.underlay),
    encap: part(shape.encap, o.encap),
    routes: part(shape.routes, o.routes),
    // peers that are not a list at all: one failed entry, so that "at least one peer is needed"
    // is said only when there are none.
    peers: Array.isArray(o.peers) ? o.peers.map((p) => part(shape.peers.unwrap().element, p)) : o.peers == null ? [] : [undefined],
  };
}

/** routes.source: `config` needs peers; `kernel` needs underlay.allowed_endpoints, and not 0.0.0.0/0. */
function sourceCheck(c: CrossInput): Problem[] {
  const problems: Problem[] = [];
  const source = c.routes?.source;
  const allowed = c.underlay?.allowed_endpoints;
  if (source === 'config' && c.peers.length === 0)
    problems.push({ path: 'peers', message: 'at least one peer is needed (or routes.source: kernel, which learns them from the routing table)' });
  if (source === 'kernel' && c.underlay && allowed === undefined)
    problems.push({ path: 'underlay.allowed_endpoints', message: 'required with routes.source: kernel: the underlay CIDRs a route gateway must be inside to become a peer' });
  c.peers.forEach((p, i) => {
    if (p?.name.startsWith('kernel:')) problems.push({ path: `peers[${i}].name`, message: 'names starting with "kernel:" are those of peers learned from kernel routes' });
  });
  // AF_PACKET sending resolves each peer's next hop at start, by peer index.
  if (source === 'kernel' && c.underlay?.send === 'packet')
    problems.push({ path: 'underlay.send', message: 'packet needs a fixed peer set; with routes.source: kernel use raw' });
  allowed?.forEach((x, i) => {
    if (x.len === 0) problems.push({ path: `underlay.allowed_endpoints[${i}]`, message: `${x.text} would let any gateway become a peer; name the underlay's CIDRs` });
  });
  return problems;
}

function invalid(source: string, problems: Problem[]): IpipdError {
  const lines = problems.map((p) => `  ${p.path}: ${p.message}`);
  return new IpipdError(
    'ERR_CONFIG_INVALID',
    `${source}: ${problems.length} problem${problems.length === 1 ? '' : 's'}:\n${lines.join('\n')}`,
  );
}

/**
 * A section written with nothing under it (`control:` with every key commented out, as in the
 * README's example) is null in YAML: read it as the empty section a reader of the file sees
 * (`{}`, defaults; `peers:` an empty list).
 */
function emptySectionsFilled(raw: unknown): unknown {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return raw;
  const out: Record<string, unknown> = { ...(raw as Record<string, unknown>) };
  for (const [k, v] of Object.entries(out)) if (v === null) out[k] = k === 'peers' ? [] : {};
  return out;
}

/** Validate an already-parsed object (what the YAML document holds). */
export function validateConfig(given: unknown, source = 'config'): Config {
  const raw = emptySectionsFilled(given);
  const r = schema.safeParse(raw);
  if (!r.success) {
    const problems = r.error.issues.map((i) => ({ path: formatPath(i.path), message: i.message }));
    throw invalid(source, [...problems, ...rulesAcross(partsThatParse(raw))]);
  }
  const problems = rulesAcross(r.data);
  if (problems.length > 0) throw invalid(source, problems);
  const socket = r.data.control.socket ?? defaultControlSocket(r.data.tun.name);
  return deepFreeze({ ...r.data, control: { socket } }) as Config;
}

/** YAML text -> frozen Config. `source` names the file in every message. */
export function parseConfig(text: string, source = 'config'): Config {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    throw new IpipdError('ERR_CONFIG_PARSE', `${source}: ${e.message}`);
  }
  return validateConfig(doc.toJS() ?? {}, source);
}

export function loadConfig(file: string): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new IpipdError('ERR_CONFIG_READ', `${file}: cannot read (${errnoName(err) ?? String(err)})`, { cause: err });
  }
  return parseConfig(text, file);
}

/**
 * `JSON.stringify` replacer giving a config back as a user writes it: addresses and prefixes as
 * their text (`192.0.2.1`, `203.0.113.0/25`), not the int32 the data path uses (`ipipd check --json`).
 */
export function asWritten(_key: string, v: unknown): unknown {
  const o = v as { text?: unknown; value?: unknown; addr?: unknown } | null;
  if (o !== null && typeof o === 'object' && typeof o.text === 'string' && (o.value !== undefined || o.addr !== undefined)) return o.text;
  return v;
}

/** A short human description of a config, for `ipipd check` and the start-up log. */
export function describeConfig(c: Config): string[] {
  const lines = [
    `tun ${c.tun.name}${c.tun.address ? ` address ${c.tun.address.text}` : ''} mtu ${c.tun.mtu ?? `auto (underlay MTU - ${tunOverhead(c)}${allFou(c) ? ': every peer uses FOU' : ''})`} txqueuelen ${c.tun.txqueuelen}`,
    `underlay ${c.underlay.address.text}${c.underlay.device ? ` on ${c.underlay.device}` : ''}, learned path MTUs kept ${c.underlay.pmtu_expires ? `${c.underlay.pmtu_expires}s` : 'forever'}, sent through ${c.underlay.send === 'packet' ? "AF_PACKET to each peer's next hop" : 'the raw socket'}`,
    `icmp errors at most ${c.icmp.rate}/s, burst ${c.icmp.burst}`,
    `encap ttl ${c.encap.ttl} tos ${c.encap.tos} df ${c.encap.df}`,
    describeEncapMode(c),
  ];
  for (const p of c.peers) lines.push(`peer ${p.name} endpoint ${p.endpoint.text} prefixes ${p.prefixes.map((x) => x.text).join(', ')}${p.mtu ? ` mtu ${p.mtu}` : ''}${p.encap === 'fou' ? ' encap fou' : ''}`);
  if (fouInUse(c))
    lines.push(`fou port ${c.fou.port} source port ${c.fou.source_port === 'auto' ? `auto (${c.fou.source_ports} ports by inner flow)` : c.fou.source_port} kernel peers ${c.fou.kernel_peers} offload ${c.fou.offload ? 'on (UDP_SEGMENT, UDP_GRO where the kernel has them)' : 'off'}`);
  lines.push(
    `routes ${c.routes.install ? `installed into table ${c.routes.table}${c.routes.metric !== undefined ? ` metric ${c.routes.metric}` : ''}` : 'not installed'}`,
    ...(c.routes.source === 'kernel'
      ? [`peers also from the kernel: routes of table ${c.routes.table} via a gateway dev ${c.tun.name}, gateways inside ${(c.underlay.allowed_endpoints ?? []).map((x) => x.text).join(', ')}`]
      : []),
    ...(c.routes.own_blocks.length ? [`own blocks ${c.routes.own_blocks.map((x) => x.text).join(', ')}: a blackhole route each (proto 77, table ${c.routes.table})`] : []),
    `io batch ${c.io.batch} queues ${c.io.queues} socket_buffer ${c.io.socket_buffer} offload ${c.io.offload ? 'on (TSO, USO where the kernel has it, checksum offload, TCP and UDP receive coalescing)' : 'off'}`,
    `control ${c.control.socket === false ? 'disabled' : c.control.socket}`,
    `metrics ${c.metrics.listen ? `on http://${c.metrics.listen}/metrics` : 'off'}`,
  );
  return lines;
}

