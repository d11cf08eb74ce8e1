/**
 * The one registry of ipipd's errors (after fastify's lib/errors.js): every error the control
 * path raises is an `IpipdError` with a stable `code` from this table, a message for humans and
 * the process exit status the CLI uses for it. The README's error table is checked against this
 * registry by test/unit/readme.test.ts ("error table"), so the two cannot drift apart.
 *
 * The data path never throws: bad packets become drop counters (src/ipip/verdict.ts).
 */

export interface ErrorSpec {
  /** Exit status of `ipipd` when this error ends it. */
  readonly exit: number;
  /** One line for the README table: when it happens and what to do. */
  readonly doc: string;
}

/** What to do when the native addon does not load; ERR_NATIVE_LOAD's message and README line say it. */
export const NATIVE_FIX = 'run `npm ci` (needs g++, make, python3)';

/** Exit statuses: 1 = runtime failure, 2 = bad invocation or configuration (nothing was touched). */
export const ERRORS = Object.freeze({
  ERR_USAGE: { exit: 2, doc: 'Bad command line (unknown command or option, missing `--config`).' },
  ERR_CONFIG_READ: { exit: 2, doc: 'The config file cannot be read (missing, permissions).' },
  ERR_CONFIG_PARSE: { exit: 2, doc: 'The config file is not valid YAML; the message gives line and column.' },
  ERR_CONFIG_INVALID: {
    exit: 2,
    doc: 'The config breaks the schema; every problem is listed with its path (e.g. `peers[1].prefixes[0]`).',
  },
  ERR_NATIVE_LOAD: { exit: 1, doc: `The native addon is not built or does not load: ${NATIVE_FIX}.` },
  ERR_UNDERLAY_ADDRESS: {
    exit: 1,
    doc: '`underlay.address` is not configured on any interface of this host (or not on `underlay.device`).',
  },
  ERR_TUN_EXISTS: { exit: 1, doc: 'A network device named `tun.name` already exists; ipipd only uses a device it creates.' },
  ERR_TUN_OPEN: { exit: 1, doc: 'Opening `/dev/net/tun` or creating the device failed (needs root or CAP_NET_ADMIN).' },
  ERR_TUN_SETUP: { exit: 1, doc: 'Setting the TUN device up (MTU, queue length, IPv6 off, address) failed.' },
  ERR_RAW_SOCKET: {
    exit: 1,
    doc: 'Opening the raw IPv4 protocol-4 socket failed (needs root or CAP_NET_RAW), or binding it to the underlay address; with `underlay.send: packet`, opening the AF_PACKET socket.',
  },
  ERR_FOU_SOCKET: {
    exit: 1,
    doc: "Opening a FOU UDP socket failed: `EADDRINUSE` on `underlay.address:fou.port` means another program (or the kernel's own `ip fou add port`) holds the port.",
  },
  ERR_ROUTE_ADD: {
    exit: 1,
    doc: 'Installing a kernel route for a peer prefix failed (into the TUN, or a plain route in `encap.mode: cross-subnet`), or a blackhole of `routes.own_blocks`, e.g. `EEXIST`: the same route is already there.',
  },
  ERR_CONTROL_SOCKET: {
    exit: 1,
    doc: 'The control socket cannot be created: `EADDRINUSE` means another ipipd answers on that path; a file or directory that is not a socket is never replaced (point `control.socket` elsewhere), and a directory that cannot be made is named with its errno.',
  },
  ERR_QUEUE: {
    exit: 1,
    doc: 'A data-path queue thread (`io.queues` > 1) could not start, or failed while running; the daemon shuts down cleanly.',
  },
  ERR_STATUS_UNREACHABLE: { exit: 1, doc: '`ipipd status`, `reload`, `routes`, `trace` or `check --diff` found no daemon answering on the control socket (or one that does not answer in JSON), or the config given with `--config` has `control.socket: false`.' },
  ERR_CONTROL_REQUEST: {
    exit: 2,
    doc: 'The daemon refused a control-socket request: not a JSON object with a `cmd`, a command it does not know (an `ipipd` CLI newer than the daemon), or a `trace` whose `--peer` is not a peer the daemon runs now (the message lists them) or whose `--reason` or `--count` it does not take.',
  },
  ERR_TUN_GONE: {
    exit: 1,
    doc: 'The TUN device was deleted from outside while running (e.g. `ip link del`); its routes and address went with it. ipipd shuts down cleanly and exits 1, for its supervisor to start it again.',
  },
  ERR_METRICS_LISTEN: {
    exit: 1,
    doc: '`metrics.listen` cannot be listened on, e.g. `EADDRINUSE`: something else has that port (pick another), or `EADDRNOTAVAIL`: the address is not on this host.',
  },
  ERR_ALREADY_RUNNING: {
    exit: 1,
    doc: 'Another `ipipd run` with the same TUN (and state file) is alive; nothing was changed. Stop it first, or give this one another `tun.name`.',
  },
  ERR_STATE_FILE: {
    exit: 1,
    doc: 'The state file (beside the control socket, or under `/run/ipipd`) that crash recovery reads cannot be written.',
  },
  ERR_RELOAD_REFUSED: {
    exit: 2,
    doc: 'A reload (`ipipd reload`, SIGHUP, `check --diff`) was refused and nothing changed: the message names every key that cannot change while ipipd runs (restart to apply them), or `reload --config` named a file other than the one the daemon runs.',
  },
} as const satisfies Record<string, ErrorSpec>);

export type ErrorCode = keyof typeof ERRORS;

export class IpipdError extends Error {
  readonly code: ErrorCode;
  readonly exitCode: number;
  /** The error behind it, when there is one (a system error's errno name: `errnoName(cause)`). */
  override readonly cause?: unknown;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message);
    this.name = 'IpipdError';
    this.code = code;
    this.exitCode = ERRORS[code].exit;
    if (options?.cause !== undefined) this.cause = options.cause;
  }
}

/** The errno name carried by a system error (`err.code`), if any. */
export function errnoName(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^E[A-Z0-9]+$/.test(code) ? code : undefined;
}
