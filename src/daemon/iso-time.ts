/**
 * `Date.prototype.toISOString`, in arithmetic: `2026-12-06T01:17:10.123Z` for a time in ms since
 * the epoch. The daemon's log lines (pino's `time`) and its state file carry such timestamps,
 * and the first `toISOString` in a process makes V8 set up ICU's time-zone data, ~1 MiB of RSS
 * kept for the process's life, though an ISO timestamp is UTC and needs none of it
 * (docs/performance.md, "Footprint: what a node pays", "Second pass"). The date is the proleptic
 * Gregorian calendar (ECMA-262 §21.4.1), from days since the epoch by Howard Hinnant's
 * `civil_from_days` (chrono-Compatible Low-Level Date Algorithms); years outside 0-9999 as
 * toISOString writes them, with a sign and six digits. test/unit/iso-time.test.ts checks it
 * against toISOString over the whole range of a Date.
 */

const MS_PER_DAY = 86_400_000;
/** The largest time a Date holds, either way from the epoch (ECMA-262 §21.4.1.31 TimeClip). */
const MAX_TIME = 8.64e15;

function pad(n: number, width: number): string {
  return String(n).padStart(width, '0');
}

/** `new Date(ms).toISOString()`; a RangeError as it gives for a time that is no Date. */
export function isoTime(ms: number): string {
  if (!(Math.abs(ms) <= MAX_TIME)) throw new RangeError('Invalid time value');
  const t = Math.trunc(ms) + 0; // TimeClip; + 0 turns -0 into 0
  // The remainder first: t / MS_PER_DAY, rounded, can land on the next day for large t.
  const inDay = ((t % MS_PER_DAY) + MS_PER_DAY) % MS_PER_DAY;
  const days = (t - inDay) / MS_PER_DAY;
  // civil_from_days: eras of 400 years (146 097 days) starting on March 1st of year 0.
  const z = days + 719_468;
  const era = Math.floor(z / 146_097);
  const doe = z - era * 146_097; // day of era, 0..146096
  const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36_524) - Math.floor(doe / 146_096)) / 365); // 0..399
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100)); // day of the year from March 1st
  const mp = Math.floor((5 * doy + 2) / 153); // month from March, 0..11
  const day = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const month = mp < 10 ? mp + 3 : mp - 9;
  const year = yoe + era * 400 + (month <= 2 ? 1 : 0);
  const y = year >= 0 && year <= 9999 ? pad(year, 4) : `${year < 0 ? '-' : '+'}${pad(Math.abs(year), 6)}`;
  const h = Math.floor(inDay / 3_600_000);
  const min = Math.floor(inDay / 60_000) % 60;
  const s = Math.floor(inDay / 1000) % 60;
  return `${y}-${pad(month, 2)}-${pad(day, 2)}T${pad(h, 2)}:${pad(min, 2)}:${pad(s, 2)}.${pad(inDay % 1000, 3)}Z`;
}
