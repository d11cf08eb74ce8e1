/**
 * `npm run bench` options: the help text, then parseOptions, which turns argv into Options (or
 * null for --help) and throws UsageError for anything it cannot take.
 */
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ROOT } from '../tools/netns/namespaces.js';
import { ALL_MODES, IPIPD_MODES, type ModeName, POD_MTU, isIpipdMode } from './modes.js';

export const HELP = `Usage: npm run bench -- [options]      (root; run 'npm run build' first)

Measures pod-to-pod traffic through ipipd against direct routing, the Node floor (node-floor,
node-floor-udp: the least a Node.js data path does, bench/floor.ts) and, when installed,
quicktun and wireguard-go, interleaved over rounds: round 1 runs every mode, round 2 every
mode again, ... Each mode gets a fresh pair of hosts in network namespaces
(scripts/netns-setup.sh, pods at MTU ${POD_MTU}). Figures: TCP 1 and 4 streams (Gb/s), UDP 64 B
and 1400 B delivered packets/s at an unlimited offered rate, tunnel CPU µs per packet, ping RTT
p50/p99/p99.9 idle and while one TCP stream runs through the same path, and added to direct,
tunnel RSS; each also as a ratio to direct routing in the same round, the added latency also
to quicktun's (and idle to node-floor's), with the spread over rounds.

Options:
  --quick            one short run: 2 rounds of 1 s tests (about 12 minutes for 9 modes,
                     most of it the 2 x 1000 pings per mode)
  --rounds N         rounds (default 3; --quick: 2)
  --duration S       seconds per iperf3 test (default 5; --quick: 1)
  --pings N          pings per latency measurement, 10 ms apart, idle and under load
                     (default 1000, also with --quick: p99.9 needs 1000)
  --modes LIST       comma-separated, from ${ALL_MODES.join(',')}
                     (default: all; those not installed are skipped unless named here)
  --peers            first install the peers and tools: apt-get install -y quicktun
                     wireguard-go wireguard-tools iperf3
  --out DIR          where to write bench-<timestamp>.json and .svg (default: results/)
  --soak [MINUTES]   instead of the comparison: ipipd's memory over MINUTES (default 10) of
                     steady traffic (iperf3 TCP at 500 Mb/s + UDP 64 B at 10 kpps) in one
                     topology; both daemons' VmRSS/VmHWM every 10 s; start (after 30 s of
                     warm-up), end, max, slope in MiB/min, packets forwarded, and a verdict
                     against issue 4 (slope < 0.5 MiB/min, max <= 100 MiB); writes
                     soak-<timestamp>.json and .svg. Takes only --out besides, and
                     --modes ipipd-2q (2 data-path queues) or ipipd-pkt (underlay.send:
                     packet) to soak that daemon instead.
  -h, --help         this text

Output: a progress line on stderr, the table on stdout, the JSON (raw per-round figures,
summary, machine facts) and the SVG chart of the ratios. Exit status: 0 done, 1 a mode carried
no traffic or a tool failed (partial JSON written), 2 bad usage or missing prerequisite.
`;

export interface Options {
  rounds: number;
  duration: number;
  pings: number;
  modes: ModeName[];
  modesExplicit: boolean;
  peers: boolean;
  quick: boolean;
  out: string;
  /** Minutes of the soak, or null for the comparison bench. */
  soak: number | null;
}

export const SOAK_DEFAULT_MINUTES = 10;

export class UsageError extends Error {}

export function parseOptions(argv: string[]): Options | null {
  // `--soak` takes an optional number: give parseArgs the default when none follows.
  argv = argv.flatMap((a, i) => (a === '--soak' && !/^\d/.test(argv[i + 1] ?? '') ? [a, String(SOAK_DEFAULT_MINUTES)] : [a]));
  let values;
  try {
    values = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        quick: { type: 'boolean' },
        rounds: { type: 'string' },
        duration: { type: 'string' },
        pings: { type: 'string' },
        modes: { type: 'string' },
        peers: { type: 'boolean' },
        out: { type: 'string' },
        soak: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (values.help) return null;
  const quick = values.quick ?? false;
  const int = (name: string, raw: string | undefined, dflt: number, min: number, max: number): number => {
    if (raw === undefined) return dflt;
    const v = Number(raw);
    if (!/^\d+$/.test(raw) || v < min || v > max) throw new UsageError(`--${name} must be an integer ${min}..${max}, got '${raw}'`);
    return v;
  };
  let modes = [...ALL_MODES];
  if (values.modes !== undefined) {
    const list = values.modes.split(',').map((s) => s.trim()).filter(Boolean);
    const bad = list.filter((m) => !(ALL_MODES as readonly string[]).includes(m));
    if (bad.length > 0 || list.length === 0) throw new UsageError(`--modes: unknown mode '${bad.join(',')}' (known: ${ALL_MODES.join(',')})`);
    modes = [...new Set(list)] as ModeName[];
  }
  let soak: number | null = null;
  if (values.soak !== undefined) {
    soak = int('soak', values.soak, SOAK_DEFAULT_MINUTES, 1, 1440);
    const others = (['quick', 'rounds', 'duration', 'pings', 'peers'] as const).filter((k) => values[k] !== undefined);
    if (others.length > 0) throw new UsageError(`--soak takes only --out and --modes, not ${others.map((k) => `--${k}`).join(', ')}`);
    if (values.modes !== undefined && !(modes.length === 1 && isIpipdMode(modes[0]!))) {
      throw new UsageError(`--soak --modes: one of ${IPIPD_MODES.join(', ')}, not '${values.modes}'`);
    }
  }
  return {
    soak,
    quick,
    rounds: int('rounds', values.rounds, quick ? 2 : 3, 1, 100),
    duration: int('duration', values.duration, quick ? 1 : 5, 1, 3600),
    pings: int('pings', values.pings, 1000, 5, 100_000),
    modes,
    modesExplicit: values.modes !== undefined,
    peers: values.peers ?? false,
    out: resolve(values.out ?? join(ROOT, 'results')),
  };
}
