import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EmbeddedKv } from '../../src/kv/embedded.js';
import { openKv } from '../../src/kv/open.js';
import { KvError } from '../../src/kv/kv.js';
import { Reconciler } from '../../src/kv/reconciler.js';
import { keys } from '../../src/kv/schema.js';
import { conformance } from './conformance.js';
import { poll } from '../helpers/wait.js';

conformance('embedded', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vxt-kv-'));
  const a = new EmbeddedKv(join(dir, 'store.db'));
  const b = new EmbeddedKv(join(dir, 'store.db')); // a second agent on the same machine
  return {
    a,
    b,
    compact: async (rev) => a.compact(rev),
    revoke: async (id) => b.revokeLease(id),
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
    // count the polls (each reads data_version) and the event reads on a (what a full poll does)
    const q = (a as unknown as { q: Record<string, { all: (...args: unknown[]) => unknown[]; get: () => unknown }> }).q;
    const all = q.eventsAfter.all.bind(q.eventsAfter);
    const dv = q.dataVersion.get.bind(q.dataVersion);
    let reads = 0;
    let polls = 0;
    q.eventsAfter.all = (...args: unknown[]) => {
      reads++;
      return all(...args);
    };
    q.dataVersion.get = () => {
      polls++;
      return dv();
    };
    const seen: string[] = [];
    const w = a.watch('/t/', 0, { events: (evs) => seen.push(...evs.map((e) => e.key)), error: () => {} });
    await poll(
      () => polls,
      (n) => n >= 2,
      5000,
    );
    const idle0 = { reads, polls };
    // ten idle polls, however long the machine takes for them, with nothing committed anywhere
    const idle = await poll(
      () => polls - idle0.polls,
      (n) => n >= 10,
      20_000,
    );
    assert.ok(idle.ok, `only ${idle.v} polls ran`);
    assert.ok(reads - idle0.reads <= 1, `${idle.v} idle polls ran ${reads - idle0.reads} event reads`);
    await b.put('/t/k', 'v'); // another connection: only data_version tells a
    await poll(
      () => seen.includes('/t/k'),
      (x) => x,
      10_000,
    );
    assert.deepEqual(seen, ['/t/k']);
    // a lease that nobody renews expires although nothing is committed anywhere while it runs out
    const l = await b.grantLease(1);
    await b.put('/t/leased', 'x', l.id);
    l.release();
    const t0 = Date.now();
    await poll(
      () => a.get('/t/leased'),
      (v) => v === null,
      10_000,
    );
    assert.equal(await a.get('/t/leased'), null, 'the expired lease took its key');
    // a correctness bound (a 1 s lease must not end early), not a speed one
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
  // with the timed poll an hour away, only the WAL change events and the lease deadline timer can wake a
  const a = new EmbeddedKv(join(dir, 'store.db'), { pollMs: 3_600_000 });
  const b = new EmbeddedKv(join(dir, 'store.db'));
  try {
    const seen: number[] = [];
    const w = a.watch('/t/', 0, { events: () => seen.push(Date.now()), error: () => {} });
    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      const n = seen.length;
      const t0 = Date.now();
      await b.put(`/t/k${i}`, 'v');
      const got = await poll(
        () => seen.length,
        (m) => m > n,
        30_000,
        2,
      );
      assert.ok(got.ok, `put ${i} never woke the watcher`);
      times.push(seen[seen.length - 1] - t0);
    }
    console.log(`# another connection's put -> watcher event: ${times.join(', ')} ms`);
    // and a lease that runs out with nothing committed is still expired by the deadline timer
    const l = await b.grantLease(1);
    await b.put('/t/leased', 'x', l.id);
    l.release();
    await b.close();
    const t0 = Date.now();
    const gone = await poll(
      () => a.get('/t/leased'),
      (v) => v === null,
      30_000,
    );
    assert.ok(gone.ok, 'the expired lease took its key (the timed poll is an hour away)');
    console.log(`# lease (TTL 1 s) expired ${Date.now() - t0} ms after its release`);
    w.close();
  } finally {
    await a.close();
    await b.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a re-list that fails leaves the tables as they were: nothing is removed until a list is complete', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vxt-kv-'));
  const kv = new EmbeddedKv(join(dir, 'store.db'));
  const removed: string[] = [];
  const r = new Reconciler(
    kv,
    (ch) => {
      for (const [, macs] of ch.endpoints) for (const [mac, prev] of macs) if (prev) removed.push(mac);
    },
    () => {},
    3_600_000,
  );
  try {
    const rec = (ip: string) => JSON.stringify({ ip, host: 'hx', name: `e${ip.slice(-1)}`, aliases: [] });
    for (let i = 1; i <= 3; i++) await kv.put(keys.endpoint('n', `02:00:00:00:00:0${i}`), rec(`198.19.9.${i}`));
    await r.start();
    await r.watchNetwork('n');
    assert.equal(r.state.endpoints.get('n')?.size, 3);
    // the store answers the list with an error (a compaction race, an outage): the state and tables stay
    const list = kv.list.bind(kv);
    kv.list = () => Promise.reject(new KvError('ERR_KV_UNAVAILABLE', 'list failed on purpose'));
    await r.resync();
    assert.equal(r.status.lastError, 'list failed on purpose');
    assert.equal(r.state.endpoints.get('n')?.size, 3, 'all three still there');
    assert.deepEqual(removed, [], 'nothing was taken out of the tables');
    // once a list completes, it replaces the state, differences only
    kv.list = list;
    await kv.put(keys.endpoint('n', '02:00:00:00:00:04'), rec('198.19.9.4'));
    await r.resync();
    assert.equal(r.state.endpoints.get('n')?.size, 4);
    assert.deepEqual(removed, []);
  } finally {
    r.stop();
    await kv.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a new store file, and its WAL, are readable by root only (0600)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vxt-kv-'));
  const path = join(dir, 'sub', 'store.db');
  const kv = new EmbeddedKv(path);
  try {
    await kv.put('/t/x', '1');
    for (const f of [path, `${path}-wal`]) assert.equal(statSync(f).mode & 0o777, 0o600, f);
    assert.equal(statSync(join(dir, 'sub')).mode & 0o777, 0o700, 'a directory it made');
  } finally {
    await kv.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
