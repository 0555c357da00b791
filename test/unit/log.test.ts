import assert from 'node:assert/strict';
import { test } from 'node:test';
import { type Logger, throttled } from '../../src/common/log.js';

test('a repeating warning is logged with backoff, saying how many were held back; quiet, it starts again', () => {
  const lines: Record<string, unknown>[] = [];
  const log: Logger = { debug() {}, info() {}, error() {}, warn: (_m, f) => lines.push(f ?? {}) };
  let t = 0;
  const warn = throttled(log, 'KV watch', 1000, 8000, () => t);
  for (; t < 20_000; t += 50) warn({ n: t }); // 20 a second for 20 s, as a read-only store did
  // at 0, 1000, 3000, 7000, 15000: the interval doubles up to 8 s
  assert.deepEqual(
    lines.map((l) => l.n),
    [0, 1000, 3000, 7000, 15000],
  );
  assert.equal(lines[0].repeated, undefined);
  assert.equal(lines[1].repeated, 19, 'the 19 held back in the first second');
  assert.equal(lines[4].repeated, 159);
  t = 40_000; // quiet for longer than the longest interval
  warn({ n: t });
  t += 1000;
  warn({ n: t });
  assert.deepEqual(
    lines.slice(5).map((l) => l.n),
    [40_000, 41_000],
    'back to the first interval',
  );
});
