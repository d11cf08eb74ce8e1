/**
 * `ipipd run`'s path without yargs (src/daemon/run-args.ts): the command lines it takes, as
 * yargs would read them, and every other one left to yargs, which words the help and the usage
 * errors (test/integration/first-use.test.ts and cli.test.ts check those through bin/ipipd.js).
 */
import { describe, expect, test } from 'vitest';
import { LEVELS, runArgs } from '../../src/daemon/run-args.js';

describe('runArgs: well-formed run command lines', () => {
  test.each([
    [['run', '--config', 'a.yaml'], 'a.yaml', undefined],
    [['run', '-c', 'a.yaml'], 'a.yaml', undefined],
    [['run', '--config=a.yaml'], 'a.yaml', undefined],
    [['run', '--config=a=b.yaml'], 'a=b.yaml', undefined],
    [['run', '--config', '/etc/ipipd/ipipd.yaml', '--log-level', 'debug'], '/etc/ipipd/ipipd.yaml', 'debug'],
    [['run', '--log-level=silent', '-c', 'x'], 'x', 'silent'],
    [['run', '--log-level', 'warn', '--config=dir with spaces/c.yaml'], 'dir with spaces/c.yaml', 'warn'],
  ] as const)('%j', (argv, config, logLevel) => {
    expect(runArgs(argv)).toEqual({ config, logLevel });
  });

  test('every log level is taken', () => {
    for (const l of LEVELS) expect(runArgs(['run', '-c', 'f', '--log-level', l])?.logLevel).toBe(l);
  });
});

describe('runArgs: everything else goes to yargs', () => {
  test.each([
    [[]],
    [['check', '--config', 'a.yaml']],
    [['status', '-c', 'a.yaml']],
    [['--config', 'a.yaml', 'run']],
    [['run']], // Missing required argument: config
    [['run', '--config']], // Not enough arguments following: config
    [['run', '-c']],
    [['run', '--config=']],
    [['run', '--config', '--log-level', 'info']],
    [['run', '--config', '-x']],
    [['run', '--config', 'a.yaml', '--help']],
    [['run', '--help']],
    [['run', '-h']],
    [['run', '--version']],
    [['run', '--config', 'a.yaml', '--bogus', 'x']], // Unknown argument: bogus
    [['run', '--config', 'a.yaml', 'extra']],
    [['run', '--config', 'a.yaml', '--log-level', 'loud']], // Invalid values
    [['run', '--config', 'a.yaml', '--log-level']],
    [['run', '--config', 'a.yaml', '--logLevel', 'info']], // yargs' camel-case alias
    [['run', '--config', 'a.yaml', '--config', 'b.yaml']], // yargs makes an array of it
    [['run', '-c', 'a.yaml', '--log-level', 'info', '--log-level', 'warn']],
    [['run', '-c=a.yaml']],
    [['run', '--', '--config', 'a.yaml']],
    [['run', '--no-config']],
  ] as const)('%j', (argv) => {
    expect(runArgs(argv)).toBeUndefined();
  });
});
