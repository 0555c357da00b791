import { Etcd3 } from 'etcd3';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { EtcdKv } from '../../src/kv/etcd.js';
import { startEtcd, type EtcdServer } from '../helpers/etcd.js';
import { conformance } from './conformance.js';

let srv: EtcdServer;
before(async () => {
  srv = await startEtcd();
});
after(async () => {
  await srv?.stop();
});

conformance('etcd', async () => {
  const a = new EtcdKv({ endpoints: [srv.endpoint] });
  const b = new EtcdKv({ endpoints: [srv.endpoint] });
  return {
    a,
    b,
    compact: async (rev) => {
      const c = new Etcd3({ hosts: `http://${srv.endpoint}` });
      await c.kv.compact({ revision: String(rev), physical: true });
      c.close();
    },
    revoke: async (id) => {
      const c = new Etcd3({ hosts: `http://${srv.endpoint}` });
      await c.leaseClient.leaseRevoke({ ID: id });
      c.close();
    },
    done: async () => {
      await a.close();
      await b.close();
    },
  };
});

// ---- lists that scale (issue 24): pages at one revision, no gRPC message limit, compaction while paging

/** Puts `n` keys `${prefix}kNNNNNN` with `size`-byte values, 128 per transaction. */
async function fill(kv: EtcdKv, prefix: string, n: number, size: number): Promise<void> {
  const v = 'x'.repeat(size);
  for (let i = 0; i < n; i += 128) {
    const ops = [];
    for (let j = i; j < Math.min(n, i + 128); j++)
      ops.push({ type: 'put' as const, key: `${prefix}k${String(j).padStart(6, '0')}`, value: v });
    await kv.txn([], ops);
  }
}

/**
 * Runs `between` once, right after the first page `kv` reads (the moment a concurrent writer or a compaction would
 * hurt a list that is not one snapshot). `pages()` counts the pages read successfully; `restore()` undoes it.
 */
function afterFirstPage(kv: EtcdKv, between: () => Promise<void>): { pages: () => number; restore: () => void } {
  const raw = (kv as unknown as { client: { kv: { range: (r: object) => Promise<unknown> } } }).client.kv;
  const range = raw.range.bind(raw);
  let calls = 0;
  raw.range = async (r: object) => {
    const res = await range(r);
    if (++calls === 1) await between();
    return res;
  };
  return { pages: () => calls, restore: () => (raw.range = range) };
}

test('etcd list: more than one page comes back whole, in order, from pages read at one revision', async () => {
  const kv = new EtcdKv({ endpoints: [srv.endpoint], pageSize: 7 });
  const p = `/page${process.pid}/`;
  try {
    await fill(kv, p, 25, 10);
    // a write that lands between two pages must not show: the list is the store as of its first page
    const hook = afterFirstPage(kv, async () => {
      const other = new EtcdKv({ endpoints: [srv.endpoint] });
      await other.put(`${p}k000010a`, 'between pages'); // sorts into a later page
      await other.delete(`${p}k000020`);
      await other.close();
    });
    const pages0 = kv.pages;
    const { entries, revision } = await kv.list(p);
    assert.equal(kv.pages - pages0, 4, '25 keys in pages of 7');
    assert.deepEqual(
      entries.map((e) => e.key.slice(p.length)),
      Array.from({ length: 25 }, (_, i) => `k${String(i).padStart(6, '0')}`),
      'exactly the keys as of the first page',
    );
    assert.ok(entries.every((e) => e.modRevision <= revision));
    hook.restore();
    const now = await kv.list(p);
    assert.equal(now.entries.length, 25, 'one key more, one less, once the list is read again');
    assert.ok(now.entries.some((e) => e.key === `${p}k000010a`));
  } finally {
    await kv.txn([], [{ type: 'deletePrefix', prefix: p }]);
    await kv.close();
  }
});

test('etcd list: a compaction between pages starts the list over at the new revision', async () => {
  const kv = new EtcdKv({ endpoints: [srv.endpoint], pageSize: 5 });
  const p = `/compact${process.pid}/`;
  try {
    await fill(kv, p, 12, 10);
    const hook = afterFirstPage(kv, async () => {
      const c = new Etcd3({ hosts: `http://${srv.endpoint}` });
      const head = await kv.put(`${p}k000003`, 'changed'); // a revision after the first page's
      await c.kv.compact({ revision: String(head), physical: true });
      c.close();
    });
    const { entries } = await kv.list(p);
    assert.equal(entries.length, 12);
    assert.equal(
      entries.find((e) => e.key === `${p}k000003`)?.value,
      'changed',
      'the list that succeeded is the later one',
    );
    // pages read: the first of the first try (its second failed: compacted), then all 3 of the second try
    assert.equal(hook.pages(), 1 + 3, `pages read: ${hook.pages()}`);
  } finally {
    await kv.txn([], [{ type: 'deletePrefix', prefix: p }]);
    await kv.close();
  }
});

test("etcd list: 40,000 records (6 MB, past gRPC's 4 MiB message limit) list whole", async () => {
  const kv = new EtcdKv({ endpoints: [srv.endpoint] });
  const p = `/big${process.pid}/`;
  try {
    await fill(kv, p, 40_000, 140);
    const pages0 = kv.pages;
    const { entries } = await kv.list(p);
    assert.equal(entries.length, 40_000);
    assert.equal(kv.pages - pages0, 4);
  } finally {
    await kv.txn([], [{ type: 'deletePrefix', prefix: p }]);
    await kv.close();
  }
});

// ---- the watch thread (issue 24): watches run beside the data plane; losing the thread loses no change

test('etcd watch thread: a burst arrives in order in a few messages; a dead thread asks for a re-list', async () => {
  const kv = new EtcdKv({ endpoints: [srv.endpoint] });
  try {
    const start = (await kv.list('wt/')).revision;
    const got: string[] = [];
    const revs: number[] = [];
    let batches = 0;
    const errors: string[] = [];
    const h = {
      events: (evs: { key: string; modRevision: number }[]) => {
        batches++;
        for (const e of evs) {
          got.push(e.key);
          revs.push(e.modRevision);
        }
      },
      error: (e: { code: string }) => errors.push(e.code),
    };
    const w = kv.watch('wt/', start, h);
    const keys = Array.from({ length: 500 }, (_, i) => `wt/${String(i).padStart(4, '0')}`);
    await Promise.all(keys.map((k, i) => new Promise((r) => setTimeout(r, i % 50)).then(() => kv.put(k, 'x'))));
    for (let i = 0; i < 200 && got.length < keys.length; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(got.length, keys.length, 'every change arrived');
    assert.deepEqual([...got].sort(), keys, "each once (the puts raced, so their order is etcd's)");
    assert.ok(
      revs.every((r, i) => i === 0 || r > revs[i - 1]),
      'in revision order',
    );
    assert.ok(batches < keys.length, `${batches} messages for ${keys.length} changes`);
    console.log(`# ${keys.length} changes arrived in ${batches} messages from the watch thread`);
    // the thread dies: the watch's owner is told to re-list, and a new watch works on a new thread
    await (kv as unknown as { watchThread: { terminate(): Promise<number> } }).watchThread.terminate();
    for (let i = 0; i < 100 && !errors.length; i++) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(errors, ['ERR_KV_COMPACTED']);
    w.close();
    const after: string[] = [];
    const w2 = kv.watch('wt/', (await kv.list('wt/')).revision, {
      events: (evs) => after.push(...evs.map((e) => e.key)),
      error: () => {},
    });
    // no wait for the new thread: the watch starts from that revision, so a put before it is in place still arrives
    await kv.put('wt/late', 'y');
    for (let i = 0; i < 100 && !after.length; i++) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(after, ['wt/late']);
    w2.close();
  } finally {
    await kv.close();
  }
});
