/**
 * The anti-replay window (src/vxlan/replay.ts) against a model that remembers every counter: over random
 * sequences (in order, reordered within and beyond the window, duplicated, big jumps) both give the same verdict
 * for every datagram.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { REPLAY_WINDOW, ReplayWindow, type ReplayVerdict } from '../../src/vxlan/replay.js';

function model(): { check(n: number): ReplayVerdict; commit(n: number): void } {
  const seen = new Set<number>();
  let top = -1;
  return {
    check: (n) => (n > top ? 'ok' : n <= top - REPLAY_WINDOW ? 'old' : seen.has(n) ? 'replay' : 'ok'),
    commit: (n) => {
      seen.add(n);
      top = Math.max(top, n);
    },
  };
}

test('the window gives the verdict of a model that remembers everything', () => {
  let x = 12345;
  const rnd = () => (x = (x * 1103515245 + 12345) >>> 0) / 2 ** 32;
  for (let run = 0; run < 20; run++) {
    const w = new ReplayWindow();
    const m = model();
    let next = run * 1_000_000_000; // some runs start far from 0
    const recent: number[] = [];
    for (let i = 0; i < 20_000; i++) {
      let n: number;
      const r = rnd();
      if (r < 0.6) n = next++;
      else if (r < 0.8 && recent.length)
        n = recent[Math.floor(rnd() * recent.length)]; // a duplicate
      else if (r < 0.95)
        n = Math.max(0, next - 1 - Math.floor(rnd() * REPLAY_WINDOW * 1.5)); // late, maybe too late
      else n = next += Math.floor(rnd() * REPLAY_WINDOW * 3); // a jump, sometimes past a whole window
      const v = w.check(n);
      assert.equal(v, m.check(n), `run ${run}, datagram ${i}, counter ${n}`);
      // a forged datagram (tag fails) is checked but never committed: 10 % of them here
      if (v === 'ok' && rnd() > 0.1) {
        w.commit(n);
        m.commit(n);
        recent.push(n);
        if (recent.length > 64) recent.shift();
      }
    }
  }
});

test('the edges: first datagram, exactly a window back, one inside', () => {
  const w = new ReplayWindow();
  assert.equal(w.check(0), 'ok');
  w.commit(0);
  assert.equal(w.check(0), 'replay');
  w.commit(REPLAY_WINDOW);
  assert.equal(w.check(0), 'old', 'exactly a window below the top');
  assert.equal(w.check(1), 'ok', 'one inside, never seen');
  assert.equal(w.check(REPLAY_WINDOW), 'replay');
});
