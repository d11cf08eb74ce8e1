/**
 * `ipipd run`'s command line, read without yargs. yargs and what it pulls in (string-width's
 * `Intl.Segmenter`, y18n, its own parser) cost the daemon ~1.3 MiB of V8 heap and 2-3 MiB of
 * RSS for the life of the process, only to read two flags (docs/performance.md, "Footprint:
 * what a node pays", "Second pass"). So bin/ipipd.js tries `runArgs` first: a well-formed `run`
 * command line starts the daemon directly; anything else (`--help`, a missing or unknown flag, a
 * value that is not one of the choices, any other command) returns undefined and goes to the
 * yargs CLI (src/daemon/cli.ts), which prints the same help and the same usage errors (exit 2)
 * as always. This parser never reports an error itself, so there is one place that words them.
 *
 * Accepted, as yargs reads them for `run`: `--config FILE`, `-c FILE`, `--config=FILE`,
 * `--log-level LEVEL`, `--log-level=LEVEL`, each at most once, in any order.
 */

/** pino's levels, the choices of `--log-level` (and of `log.level` in the config). */
export const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type Level = (typeof LEVELS)[number];

export interface RunArgs {
  config: string;
  logLevel: Level | undefined;
}

/**
 * `argv` without node and the script (`process.argv.slice(2)`): the `run` command's arguments if
 * they are well formed, else undefined (yargs then parses them and says what is wrong).
 */
export function runArgs(argv: readonly string[]): RunArgs | undefined {
  if (argv[0] !== 'run') return undefined;
  let config: string | undefined;
  let level: string | undefined;
  for (let i = 1; i < argv.length; i++) {
    const arg = argv[i]!;
    const eq = arg.startsWith('--') ? arg.indexOf('=') : -1;
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    const value = eq > 0 ? arg.slice(eq + 1) : argv[++i];
    // A missing value, or one yargs would read as a flag of its own: let yargs word the error.
    if (value === undefined || value === '' || value.startsWith('-')) return undefined;
    if ((name === '--config' || name === '-c') && config === undefined) config = value;
    else if (name === '--log-level' && level === undefined) level = value;
    else return undefined;
  }
  if (config === undefined) return undefined;
  if (level !== undefined && !(LEVELS as readonly string[]).includes(level)) return undefined;
  return { config, logLevel: level as Level | undefined };
}
