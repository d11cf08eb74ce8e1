/**
 * The JIT warm-up's point, checked on V8 itself: after `warmUp` (src/dataplane/warmup.ts) the
 * batch handlers that the native Readers call on each wake-up (send.ts `onTunBatch`, receive.ts
 * `onRawBatch`) are optimized (TurboFan) code, and the warm-up's clean-up (putting the fds,
 * counters and peers back) has not invalidated them. It did once: a second store of the same
 * value into a field V8 still treated as a constant (`icmpOutCount = 0`, the peers' unchanged
 * counters) deoptimized `onTunBatch` and `onRawBatch` before the first real packet, and at a ping
 * every 10 ms they stayed unoptimized for minutes.
 *
 * test/fixtures/warmup-jit.ts (run from dist/ after `npm run build`, with
 * --allow-natives-syntax) does the warm-up in a child process and reports
 * `%GetOptimizationStatus` of each function.
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const FIXTURE = fileURLToPath(new URL('../../dist/test/fixtures/warmup-jit.js', import.meta.url));

// V8's OptimizationStatus bits (src/runtime/runtime-test.cc).
const IS_FUNCTION = 1 << 0;
const OPTIMIZED = 1 << 4;
const TURBOFANNED = 1 << 6;
const MARKED_FOR_DEOPTIMIZATION = 1 << 14;

interface Report {
  packets: number;
  functions: Record<string, number>;
}

function run(mode: string[]): Report {
  const out = execFileSync(process.execPath, ['--allow-natives-syntax', FIXTURE, ...mode], { encoding: 'utf8', timeout: 60_000 });
  return JSON.parse(out.trim().split('\n').pop()!) as Report;
}

describe.each([
  { name: 'plain', mode: [] },
  { name: 'offload', mode: ['offload'] },
])('after the JIT warm-up ($name)', ({ mode }) => {
  it('the batch handlers (onTunBatch, onRawBatch) are TurboFan code, none marked for deoptimization', () => {
    const r = run(mode);
    expect(r.packets).toBeGreaterThan(0);
    expect(Object.keys(r.functions).sort()).toEqual(['onRawBatch', 'onTunBatch']);
    for (const [name, s] of Object.entries(r.functions)) {
      expect(s & IS_FUNCTION, `${name}: status ${s} is not a function's`).toBe(IS_FUNCTION);
      expect(s & (OPTIMIZED | TURBOFANNED), `${name}: status ${s} (0b${s.toString(2)}): not optimized`).toBe(OPTIMIZED | TURBOFANNED);
      expect(s & MARKED_FOR_DEOPTIMIZATION, `${name}: marked for deoptimization`).toBe(0);
    }
  });
});
