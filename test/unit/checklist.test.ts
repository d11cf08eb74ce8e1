/**
 * docs/rfc2003-checklist.md stays true to the tests it cites: every `test/...test.ts` it names
 * exists, and every quoted title after it ("§3.1 encapsulation:") starts a describe or a test of
 * that file (a `%s` in a test.each title matches anything; the titles of `test.each` tables that
 * span lines are found too).
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { ROOT } from '../../tools/netns/namespaces.js';

const doc = readFileSync(join(ROOT, 'docs', 'rfc2003-checklist.md'), 'utf8');

/** Every citation: a backquoted test file, then the quoted titles up to the next file or line end. */
function citations(): { file: string; title: string }[] {
  const out: { file: string; title: string }[] = [];
  for (const line of doc.split('\n')) {
    const re = /`(test\/[\w/.-]+\.test\.ts)`:?([^`]*)/g;
    for (let m = re.exec(line); m; m = re.exec(line)) {
      for (const t of m[2]!.matchAll(/"([^"]+)"/g)) out.push({ file: m[1]!, title: t[1]! });
    }
  }
  return out;
}

/** The titles of `describe`, `test` and `it` calls (each and skipIf forms too) in a test file. */
function titles(file: string): string[] {
  const src = readFileSync(join(ROOT, file), 'utf8');
  const named = /\b(?:describe|test|it)(?:\.\w+(?:\([^)]*\))?)*(?:\([^()]*\))?\(\s*(['"`])((?:\\.|(?!\1).)*)\1/g;
  // `test.each([...rows spanning lines...] as T)('title', ...)`: the title follows the table's `)(`.
  const afterTable = /\]\s*(?:as [^()]*)?\)\(\s*(['"`])((?:\\.|(?!\1).)*)\1/g;
  return [...src.matchAll(named), ...src.matchAll(afterTable)].map((m) => m[2]!.replace(/\\(.)/g, '$1'));
}

describe('docs/rfc2003-checklist.md', () => {
  const cited = citations();

  test('cites tests (at least one per section)', () => {
    expect(cited.length).toBeGreaterThan(20);
  });

  test.each(cited.map((c) => [c.file, c.title]))('%s: "%s" exists', (file, title) => {
    expect(existsSync(join(ROOT, file)), file).toBe(true);
    const all = titles(file);
    // The cited title starts a title of the file; a `%s` in it (a test.each title) matches anything.
    const starts = new RegExp(`^${title.split('%s').map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('.*')}`);
    expect(all.some((t) => starts.test(t)), `${title}\nnot among:\n${all.join('\n')}`).toBe(true);
  });
});
