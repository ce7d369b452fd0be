/** @module Percentiles and the figures a run reports, rounded for people. */

/** Nearest-rank percentile of `sorted` (ascending); null for no samples. */
export function percentile(sorted: readonly number[], p: number): number | null {
  if (sorted.length === 0) return null;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))];
}

export interface Spread {
  p50Ms: number | null;
  p99Ms: number | null;
  maxMs: number | null;
}

export function spread(samples: readonly number[]): Spread {
  const sorted = Float64Array.from(samples).sort();
  const list = Array.from(sorted);
  return {
    p50Ms: ms(percentile(list, 50)),
    p99Ms: ms(percentile(list, 99)),
    maxMs: ms(list.length > 0 ? list[list.length - 1] : null),
  };
}

/** Milliseconds to two decimals. */
export function ms(value: number | null): number | null {
  return value === null ? null : Math.round(value * 100) / 100;
}

/** A rate per second over `elapsedMs`, rounded to whole units; null when nothing was timed. */
export function perSec(count: number, elapsedMs: number): number | null {
  return elapsedMs > 0 ? Math.round((count * 1000) / elapsedMs) : null;
}

export function sum(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0);
}

/** Adds up counts by key (error codes, close codes). */
export function mergeCounts(list: readonly Record<string, number>[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const counts of list) {
    for (const [k, v] of Object.entries(counts)) out[k] = (out[k] ?? 0) + v;
  }
  return out;
}

/** Concatenates sample arrays without spreading them (spreading 100k numbers overflows the stack). */
export function concat(lists: readonly number[][]): number[] {
  const out: number[] = [];
  for (const list of lists) for (const v of list) out.push(v);
  return out;
}
