/**
 * The README's tables are part of the interface: they must say what the code does
 * (after fastify's errors test). Each table sits between HTML comment markers.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { parseConfig } from '../../src/daemon/config.js';
import { ERRORS } from '../../src/daemon/errors.js';
import { COUNTER_NAMES } from '../../src/dataplane/figures.js';
import { VERDICT_DESCRIPTIONS, VERDICT_NAMES, type VerdictName } from '../../src/ipip/verdict.js';

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

function table(marker: string): string[][] {
  const m = new RegExp(`<!-- ${marker}:start -->\\n([\\s\\S]*?)<!-- ${marker}:end -->`).exec(readme);
  if (!m) throw new Error(`README has no ${marker} table`);
  return m[1]!
    .trim()
    .split('\n')
    .slice(2) // header and separator
    .map((row) => row.split('|').slice(1, -1).map((c) => c.trim()));
}

describe('README agrees with the code', () => {
  test('error table: every registered code, its exit status and its text, in order', () => {
    const rows = table('errors');
    expect(rows.map((r) => r[0])).toEqual(Object.keys(ERRORS).map((c) => `\`${c}\``));
    for (const [code, exit, doc] of rows) {
      const spec = ERRORS[code!.replace(/`/g, '') as keyof typeof ERRORS];
      expect(Number(exit), code).toBe(spec.exit);
      expect(doc, code).toBe(spec.doc);
    }
  });

  test('drop-reason table: exactly the verdicts other than forward, in enum order, with their descriptions', () => {
    const rows = table('drop-reasons');
    expect(rows.map((r) => r[0])).toEqual(VERDICT_NAMES.filter((n) => n !== 'forward').map((n) => `\`${n}\``));
    for (const [name, text] of rows) expect(text, name).toBe(VERDICT_DESCRIPTIONS[name!.replace(/`/g, '') as VerdictName]);
  });

  test('counter table names every global counter', () => {
    for (const name of COUNTER_NAMES) expect(readme).toContain(`\`${name}\``);
  });

  test('the configuration example "with every key" is a valid config that names every section', () => {
    const m = /A complete example with every key[^\n]*\n\n```yaml\n([\s\S]*?)```/.exec(readme);
    if (!m) throw new Error('README has no complete configuration example');
    const config = parseConfig(m[1]!, 'README example');
    const sections = [...m[1]!.matchAll(/^(\w+):/gm)].map((x) => x[1]);
    expect(sections.sort()).toEqual(Object.keys(config).sort());
  });

  test('the quick start is the two commands CI and users run', () => {
    expect(readme).toContain('npm ci && npm run demo');
    expect(readme).toMatch(/\n\s+npm test\s/);
  });
});
