import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EmbeddedKv } from '../../src/kv/embedded.js';
import { openKv } from '../../src/kv/open.js';
import { conformance } from './conformance.js';

conformance('embedded', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vxt-kv-'));
  const a = new EmbeddedKv(join(dir, 'store.db'));
  const b = new EmbeddedKv(join(dir, 'store.db')); // a second agent on the same machine
  return {
    a,
    b,
    compact: async (rev) => a.compact(rev),
    done: async () => {
      await a.close();
      await b.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
});

test('--kv parsing: etcd endpoints, file paths, clear errors', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vxt-kv-'));
  const kv = await openKv(join(dir, 'x.db'));
  assert.equal(kv.kind, 'embedded');
  void kv.close();
  rmSync(dir, { recursive: true, force: true });
  await assert.rejects(openKv('etcd://'), /give at least one host:port/);
  await assert.rejects(openKv('etcd://a:1,b'), /"b" is not host:port/);
  await assert.rejects(openKv('consul://x:8500'), /unsupported scheme/);
  const e = await openKv('etcd://127.0.0.1:1,127.0.0.2:2');
  assert.equal(e.where, 'etcd://127.0.0.1:1,127.0.0.2:2');
  void e.close();
});

test('an idle poll reads only data_version; commits by another connection and due leases still get a full poll', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vxt-kv-'));
  const a = new EmbeddedKv(join(dir, 'store.db'));
  const b = new EmbeddedKv(join(dir, 'store.db'));
  try {
    // count the watchers' event reads on a (what a full poll does)
    const q = (a as unknown as { q: Record<string, { all: (...args: unknown[]) => unknown[] }> }).q;
    const all = q.eventsAfter.all.bind(q.eventsAfter);
    let reads = 0;
    q.eventsAfter.all = (...args: unknown[]) => {
      reads++;
      return all(...args);
    };
    const seen: string[] = [];
    const w = a.watch('/t/', 0, { events: (evs) => seen.push(...evs.map((e) => e.key)), error: () => {} });
    await new Promise((r) => setTimeout(r, 100));
    const idle0 = reads;
    await new Promise((r) => setTimeout(r, 400)); // about 20 polls with nothing committed
    assert.ok(reads - idle0 <= 1, `idle polls ran ${reads - idle0} event reads in 400 ms`);
    await b.put('/t/k', 'v'); // another connection: only data_version tells a
    for (let i = 0; i < 50 && !seen.includes('/t/k'); i++) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(seen, ['/t/k']);
    // a lease that nobody renews expires although nothing is committed anywhere while it runs out
    const l = await b.grantLease(1);
    await b.put('/t/leased', 'x', l.id);
    l.release();
    const t0 = Date.now();
    for (let i = 0; i < 150 && (await a.get('/t/leased')) !== null; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(await a.get('/t/leased'), null, 'the expired lease took its key');
    assert.ok(Date.now() - t0 >= 900, 'not before the TTL');
    w.close();
  } finally {
    await a.close();
    await b.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a commit by another connection wakes a watcher at once (WAL change events), not at the next timed poll', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vxt-kv-'));
  const a = new EmbeddedKv(join(dir, 'store.db'), { pollMs: 10_000 }); // the timer alone would take 10 s
  const b = new EmbeddedKv(join(dir, 'store.db'));
  try {
    const seen: number[] = [];
    const w = a.watch('/t/', 0, { events: () => seen.push(Date.now()), error: () => {} });
    await new Promise((r) => setTimeout(r, 100));
    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      const n = seen.length;
      const t0 = Date.now();
      await b.put(`/t/k${i}`, 'v');
      for (let k = 0; k < 200 && seen.length === n; k++) await new Promise((r) => setTimeout(r, 2));
      assert.ok(seen.length > n, `put ${i} not seen within ~400 ms`);
      times.push(seen[seen.length - 1] - t0);
    }
    console.log(`# another connection's put -> watcher event: ${times.join(', ')} ms`);
    // and a lease that runs out with nothing committed is still expired on time by the deadline timer
    const l = await b.grantLease(1);
    await b.put('/t/leased', 'x', l.id);
    l.release();
    await b.close();
    const t0 = Date.now();
    for (let i = 0; i < 150 && (await a.get('/t/leased')) !== null; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(await a.get('/t/leased'), null, 'the expired lease took its key');
    assert.ok(Date.now() - t0 < 2500, `expired ${Date.now() - t0} ms after release (TTL 1 s, poll timer 10 s)`);
    w.close();
  } finally {
    await a.close();
    await b.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
