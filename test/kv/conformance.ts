/**
 * The KV conformance suite: every backend must pass it unchanged. `open()` returns a fresh store view and a
 * second, independent client of the same store (another connection; for the embedded store another open of
 * the same file, as another agent process would), and a way to compact the history.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Kv, KvError, KvEvent } from '../../src/kv/kv.js';
import { Reconciler } from '../../src/kv/reconciler.js';
import { keys } from '../../src/kv/schema.js';
import { poll, sleep } from '../helpers/wait.js';

export interface Fixture {
  a: Kv;
  b: Kv;
  compact(rev: number): Promise<void>;
  /** Revokes a lease as someone else would (an operator, another client): the holder's keep-alive must notice. */
  revoke(id: string): Promise<void>;
  done(): Promise<void>;
}

/** The last value of `f` once `ok` accepts it, or when 8 s (or `ms`) ran out; the caller asserts on it. */
async function until<T>(f: () => T | Promise<T>, ok: (v: T) => boolean, ms = 8000): Promise<T> {
  return (await poll(f, ok, ms)).v;
}

export function conformance(name: string, open: () => Promise<Fixture>): void {
  let n = 0;
  const withKv = (title: string, fn: (f: Fixture, p: string) => Promise<void>): void =>
    void test(`${name}: ${title}`, async () => {
      const f = await open();
      try {
        await fn(f, `/t${process.pid}-${n++}-${Math.random().toString(36).slice(2, 6)}/`);
      } finally {
        await f.done();
      }
    });

  withKv('put, get, list by prefix; revisions move forward', async ({ a }, p) => {
    const r1 = await a.put(`${p}x`, '1');
    const r2 = await a.put(`${p}y`, '2');
    await a.put(`${p.slice(0, -1)}z`, 'outside'); // shares the prefix string minus '/', must not be listed
    assert.ok(r2 > r1);
    const x = await a.get(`${p}x`);
    assert.equal(x?.value, '1');
    assert.equal(x?.createRevision, r1);
    const r3 = await a.put(`${p}x`, '3');
    const x2 = await a.get(`${p}x`);
    assert.deepEqual([x2?.value, x2?.createRevision, x2?.modRevision], ['3', r1, r3]);
    const l = await a.list(p);
    assert.deepEqual(
      l.entries.map((e) => [e.key.slice(p.length), e.value]),
      [
        ['x', '3'],
        ['y', '2'],
      ],
    );
    assert.ok(l.revision >= r3);
    assert.equal(await a.get(`${p}nope`), null);
    assert.equal(await a.delete(`${p}y`), true);
    assert.equal(await a.delete(`${p}y`), false);
    assert.equal(await a.get(`${p}y`), null);
  });

  withKv('txn: create-if-absent has exactly one winner; compare-and-swap on modRevision', async ({ a, b }, p) => {
    const key = `${p}vni/4097`;
    const results = await Promise.all(
      [a, b, a, b].map((kv, i) => kv.txn([{ key, modRevision: 0 }], [{ type: 'put', key, value: `owner${i}` }])),
    );
    assert.equal(results.filter((r) => r.succeeded).length, 1, 'exactly one creator wins');
    const cur = (await a.get(key))!;
    const ok = await a.txn(
      [{ key, modRevision: cur.modRevision }],
      [{ type: 'put', key, value: 'swapped' }],
      [{ type: 'put', key: `${p}lost`, value: '1' }],
    );
    assert.ok(ok.succeeded);
    const stale = await b.txn(
      [{ key, modRevision: cur.modRevision }],
      [{ type: 'put', key, value: 'stale' }],
      [{ type: 'put', key: `${p}lost`, value: '1' }],
    );
    assert.ok(!stale.succeeded, 'a stale compare fails');
    assert.equal((await a.get(key))?.value, 'swapped');
    assert.equal((await a.get(`${p}lost`))?.value, '1', 'failure ops ran');
    // several ops in one txn are all-or-nothing and a deletePrefix removes only the prefix
    await a.txn(
      [],
      [
        { type: 'put', key: `${p}d/1`, value: '1' },
        { type: 'put', key: `${p}d/2`, value: '2' },
        { type: 'put', key: `${p}dd`, value: 'keep' },
      ],
    );
    await a.txn([], [{ type: 'deletePrefix', prefix: `${p}d/` }]);
    assert.deepEqual(
      (await a.list(p)).entries.map((e) => e.key.slice(p.length)),
      ['dd', 'lost', 'vni/4097'],
    );
  });

  withKv('leases: keys vanish on revoke and on expiry; keep-alive holds them', async ({ a, b }, p) => {
    const l1 = await a.grantLease(2);
    await a.put(`${p}h1`, 'x', l1.id);
    assert.equal((await b.get(`${p}h1`))?.lease, l1.id);
    await l1.revoke();
    assert.equal(await b.get(`${p}h1`), null, 'revoked: gone at once');

    const kept = await a.grantLease(2);
    await a.put(`${p}kept`, 'x', kept.id);
    const dying = await a.grantLease(2);
    await a.put(`${p}dying`, 'x', dying.id);
    dying.release(); // stop keep-alive: it must expire by itself
    const t0 = Date.now();
    const gone = await until(
      () => b.get(`${p}dying`),
      (v) => v === null,
      10_000,
    );
    assert.equal(gone, null, 'expired lease took its key');
    // a correctness bound, not a speed one: a key with a 2 s lease must not vanish within its first second
    assert.ok(Date.now() - t0 >= 1000, 'not before the TTL');
    assert.equal((await b.get(`${p}kept`))?.value, 'x', 'keep-alive held the other lease past its TTL');
    await kept.revoke();
    await assert.rejects(
      a.put(`${p}z`, 'x', dying.id),
      (e: KvError) => e.code === 'ERR_KV_LEASE_LOST' || e.code === 'ERR_KV_UNAVAILABLE',
    );
  });

  withKv('a lease revoked by someone else is reported lost to its holder, once', async (f, p) => {
    // the agent re-registers from this callback: if it never fires, a host silently drops out of the cluster
    const held = await f.a.grantLease(2);
    await f.a.put(`${p}h`, 'x', held.id);
    const lost: KvError[] = [];
    held.onLost((e) => lost.push(e));
    await f.revoke(held.id);
    const calls = await until(
      () => lost.length,
      (n) => n > 0,
      10_000,
    );
    assert.equal(calls, 1, 'onLost was called');
    assert.equal(lost[0].code, 'ERR_KV_LEASE_LOST', lost[0].message);
    assert.equal(await f.b.get(`${p}h`), null, 'its keys went with it');
    await sleep(1500); // one more keep-alive period: the callback must not fire again
    assert.equal(lost.length, 1, 'onLost fired once');
    held.release();
  });

  withKv(
    'watch from a revision: every later event under the prefix, in order, from another client too',
    async ({ a, b }, p) => {
      const start = await a.put(`${p}pre`, '0');
      const seen: KvEvent[] = [];
      const w = b.watch(p, start, { events: (evs) => seen.push(...evs), error: () => {} });
      await sleep(200);
      await a.put(`${p}k1`, 'v1');
      await a.put(`/other${p}k`, 'not mine');
      await a.txn(
        [],
        [
          { type: 'put', key: `${p}k2`, value: 'v2' },
          { type: 'delete', key: `${p}pre` },
        ],
      );
      await b.delete(`${p}k1`);
      await until(
        () => seen.length,
        (n) => n >= 4,
      );
      w.close();
      assert.deepEqual(
        seen.map((e) => [e.type, e.key.slice(p.length), e.value]),
        [
          ['put', 'k1', 'v1'],
          ['put', 'k2', 'v2'],
          ['delete', 'pre', null],
          ['delete', 'k1', null],
        ],
      );
      for (let i = 1; i < seen.length; i++) assert.ok(seen[i].modRevision >= seen[i - 1].modRevision, 'revision order');
      // a watch that starts in the past replays history
      const replay: KvEvent[] = [];
      const w2 = a.watch(p, start, { events: (evs) => replay.push(...evs), error: () => {} });
      await until(
        () => replay.length,
        (n) => n >= 4,
      );
      w2.close();
      assert.deepEqual(
        replay.map((e) => e.key),
        seen.map((e) => e.key),
      );
    },
  );

  withKv('watch behind a compaction gets ERR_KV_COMPACTED (the caller re-lists)', async (f, p) => {
    const r0 = await f.a.put(`${p}a`, '1');
    for (let i = 0; i < 5; i++) await f.a.put(`${p}a`, String(i));
    const head = await f.a.put(`${p}a`, 'last');
    await f.compact(head - 1);
    let err: KvError | undefined;
    const w = f.b.watch(p, r0, { events: () => {}, error: (e) => (err ??= e) });
    await until(
      () => err,
      (e) => e !== undefined,
    );
    w.close();
    assert.equal(err?.code, 'ERR_KV_COMPACTED');
  });

  withKv(
    'the periodic check: a current watch is not re-listed; one that silently lost an event is',
    async ({ a, b }) => {
      await a.txn([], [{ type: 'deletePrefix', prefix: keys.endpoints }]);
      const lost = keys.endpoint('chk', '02:00:00:00:00:99');
      // b's watch drops every batch that carries `lost`, without an error: the kind of failure the check is for
      const leaky: Kv = Object.create(b);
      leaky.watch = (prefix, rev, h) =>
        b.watch(prefix, rev, {
          ...h,
          events: (evs, r) => (evs.some((e) => e.key === lost) ? undefined : h.events(evs, r)),
        });
      const r = new Reconciler(
        leaky,
        () => {},
        () => {},
        300,
      );
      await r.start();
      await r.watchNetwork('chk');
      try {
        const rec = (ip: string) => JSON.stringify({ ip, host: 'hx', name: 'e', aliases: [] });
        await a.put(keys.endpoint('chk', '02:00:00:00:00:01'), rec('198.19.9.1'));
        await until(
          () => r.status.checksCurrent,
          (n) => n >= 2,
          5000,
        );
        assert.ok(r.status.checksCurrent >= 2, `checks found the watch current: ${JSON.stringify(r.status)}`);
        // one list per scope: networks/, hosts/, endpoints/chk/
        assert.equal(r.status.fullSyncs, 3, 'no re-list while the watch is current');
        assert.ok(r.state.endpoints.get('chk')?.has('02:00:00:00:00:01'));
        await a.put(lost, rec('198.19.9.2'));
        const got = await until(
          () => r.state.endpoints.get('chk')?.has('02:00:00:00:00:99') ?? false,
          (v) => v,
          8000,
        );
        assert.ok(got, 'the lost record arrives by a re-list');
        assert.equal(r.status.fullSyncs, 4, 'exactly one re-list, of the scope that lost the event');
      } finally {
        r.stop();
      }
    },
  );

  withKv(
    'a reconciler under concurrent writers from two clients ends equal to a fresh list (no lost events)',
    async ({ a, b }) => {
      // the reconciler watches /vxtap/v1/; clean up what earlier runs left there
      await a.txn([], [{ type: 'deletePrefix', prefix: keys.endpoints }]);
      const r = new Reconciler(
        b,
        () => {},
        () => {},
        3_600_000,
      );
      await r.start();
      await r.watchNetwork('net');
      const writer = async (kv: Kv, tag: string) => {
        for (let i = 0; i < 120; i++) {
          const mac = `02:00:00:00:${tag}:${(i % 40).toString(16).padStart(2, '0')}`;
          const key = keys.endpoint('net', mac);
          if (i % 3 === 2)
            await kv.delete(keys.endpoint('net', `02:00:00:00:${tag}:${((i - 1) % 40).toString(16).padStart(2, '0')}`));
          else
            await kv.put(
              key,
              JSON.stringify({ ip: `198.19.1.${(i % 200) + 2}`, host: `h${tag}`, name: `e${tag}${i}`, aliases: [] }),
            );
          if (i % 10 === 0) await kv.put(`/elsewhere/${tag}/${i}`, 'noise'); // revisions outside the watched prefix
        }
      };
      await Promise.all([writer(a, 'aa'), writer(b, 'bb'), writer(a, 'cc')]);
      const { entries } = await a.list(keys.endpoints);
      const want = entries.map((e) => e.key.slice(keys.endpoints.length)).sort();
      const held = () =>
        [...r.state.endpoints.entries()].flatMap(([net, m]) => [...m.keys()].map((mac) => `${net}/${mac}`)).sort();
      // the newest event may be a delete: wait for the content, not a revision
      const got = await until(held, (g) => g.join() === want.join(), 10_000);
      r.stop();
      assert.deepEqual(got, want);
      assert.ok(want.length > 20);
    },
  );

  withKv(
    'a watch catching up over 1500 revisions never reports a position past an event it delivers later',
    async ({ a, b }, p) => {
      const start = await a.put(`${p}start`, '0');
      // etcd sends a catching-up watcher at most 1000 revisions per response: make it catch up over more
      for (let i = 0; i < 1500; i += 50)
        await Promise.all(Array.from({ length: 50 }, (_, j) => a.put(`${p}k${(i + j) % 300}`, String(i + j))));
      const batches: { evs: KvEvent[]; rev: number }[] = [];
      const w = b.watch(p, start, { events: (evs, rev) => batches.push({ evs, rev }), error: () => {} });
      await until(
        () => batches.reduce((n, x) => n + x.evs.length, 0),
        (n) => n >= 1500,
        20_000,
      );
      w.close();
      assert.equal(
        batches.reduce((n, x) => n + x.evs.length, 0),
        1500,
      );
      for (let i = 0; i < batches.length; i++) {
        for (let j = i + 1; j < batches.length; j++) {
          for (const ev of batches[j].evs)
            assert.ok(
              ev.modRevision > batches[i].rev,
              `batch ${i} reported revision ${batches[i].rev}, batch ${j} then delivered ${ev.modRevision}`,
            );
        }
      }
    },
  );

  withKv(
    'a reconciler follows only the networks it watches: others never reach it; an unwatched one is forgotten',
    async ({ a }) => {
      await a.txn([], [{ type: 'deletePrefix', prefix: keys.endpoints }]);
      const rec = (ip: string, name: string) => JSON.stringify({ ip, host: 'hx', name, aliases: [] });
      await a.put(keys.endpoint('mine', '02:00:00:00:01:01'), rec('198.19.9.1', 'm1'));
      await a.put(keys.endpoint('other', '02:00:00:00:02:01'), rec('198.19.8.1', 'o1'));
      const seen = new Set<string>();
      const r = new Reconciler(
        a,
        (ch) => {
          for (const net of ch.endpoints.keys()) seen.add(net);
        },
        () => {},
        3_600_000,
      );
      await r.start();
      try {
        assert.equal(r.state.endpoints.size, 0, 'no endpoint records before a network is watched');
        await r.watchNetwork('mine');
        assert.ok(r.watching('mine') && !r.watching('other'));
        assert.equal(r.status.watches, 3, 'networks/, hosts/ and endpoints/mine/');
        assert.deepEqual([...r.state.endpoints.keys()], ['mine']);
        // changes on both networks: only those of the watched one arrive
        await a.put(keys.endpoint('other', '02:00:00:00:02:02'), rec('198.19.8.2', 'o2'));
        const last = await a.put(keys.endpoint('mine', '02:00:00:00:01:02'), rec('198.19.9.2', 'm2'));
        await r.waitFor(last, 8000, keys.endpointsNet('mine'));
        assert.equal(r.state.endpoints.get('mine')?.size, 2);
        assert.equal(r.state.endpoints.has('other'), false, 'the unwatched network never reached the state');
        assert.deepEqual([...seen], ['mine']);
        assert.equal(r.state.countUnder(keys.endpointsNet('mine')), 2);
        // unwatching forgets the network's records, and reports them deleted
        seen.clear();
        r.unwatchNetwork('mine');
        assert.equal(r.state.endpoints.size, 0);
        assert.equal(r.state.countUnder(keys.endpointsNet('mine')), 0);
        assert.deepEqual([...seen], ['mine']);
        assert.equal(r.status.watches, 2);
        // and its later changes do not come back
        await a.put(keys.endpoint('mine', '02:00:00:00:01:03'), rec('198.19.9.3', 'm3'));
        await sleep(300);
        assert.equal(r.state.endpoints.size, 0);
      } finally {
        r.stop();
      }
    },
  );
}
