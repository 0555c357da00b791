import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Fdb, type LocalPort } from '../../src/fdb/fdb.js';

const V1 = 0xc6120001; // 198.18.0.1
const V2 = 0xc6120002;

function clock(): { now: () => number; t: number } {
  const c = { t: 1_000_000, now: () => c.t };
  return c;
}

test('priority: local > static > kv > learned; lower kinds never replace higher ones', () => {
  const f = new Fdb<LocalPort>();
  f.addVni(10);
  const port: LocalPort = { id: 'a', mac: 0x020000000001 };
  assert.ok(f.set(10, 0x0200000000aa, 'learned', { vtep: V1, port: 4789 }));
  assert.ok(f.set(10, 0x0200000000aa, 'kv', { vtep: V2, port: 4789 }), 'kv replaces learned');
  assert.ok(!f.set(10, 0x0200000000aa, 'learned', { vtep: V1, port: 4789 }), 'learned cannot replace kv');
  assert.ok(f.set(10, 0x0200000000aa, 'static', { vtep: V1, port: 4789 }), 'static replaces kv');
  assert.ok(!f.set(10, 0x0200000000aa, 'kv', { vtep: V2, port: 4789 }));
  assert.ok(f.set(10, port.mac, 'local', { local: port }));
  assert.ok(!f.set(10, port.mac, 'static', { vtep: V1, port: 4789 }), 'a configured remote cannot hijack a local MAC');
  const v = f.vnet(10);
  assert.equal(f.snoop(v, port.mac, V2, 4789, 1), 'refused', 'snooping never moves a local MAC');
  assert.equal(v.locals.length, 1);
  assert.ok(f.del(10, port.mac, 'local'));
  assert.equal(v.locals.length, 0);
  assert.throws(() => f.set(10, 0, 'static', { vtep: V1, port: 4789 }), /flood list/);
  assert.throws(
    () => f.set(99, 1, 'static', { vtep: V1, port: 4789 }),
    (e: unknown) => (e as { code: string }).code === 'ENOVNI',
  );
});

test('flood list: append, idempotent, delete; known VTEPs are reference counted', () => {
  const f = new Fdb();
  f.addVni(10);
  f.addVni(20);
  assert.ok(!f.isKnownVtep(V1));
  f.floodAdd(10, V1, 4789, 'static');
  f.floodAdd(10, V1, 4789, 'static');
  f.floodAdd(10, V2, 4789, 'kv');
  f.floodAdd(20, V1, 4789, 'kv');
  assert.equal(f.vnet(10).flood.length, 2, 'appending the same VTEP twice keeps one');
  assert.ok(f.isKnownVtep(V1) && f.isKnownVtep(V2));
  const snapshot = f.vnet(10).flood;
  assert.ok(f.floodDel(10, V1, 4789));
  assert.equal(snapshot.length, 2, 'a walk in progress keeps its snapshot');
  assert.ok(f.isKnownVtep(V1), 'still in VNI 20');
  f.delVni(20);
  assert.ok(!f.isKnownVtep(V1));
  assert.ok(f.isKnownVtep(V2));
  f.set(10, 0x0200000000bb, 'static', { vtep: 0xc6120009, port: 4789 });
  assert.ok(f.isKnownVtep(0xc6120009), 'static remote entries make their VTEP known');
  f.del(10, 0x0200000000bb);
  assert.ok(!f.isKnownVtep(0xc6120009));
  assert.ok(!f.floodDel(10, V1, 4789), 'deleting twice reports false');
});

test('learning and ageing with an injected clock (no sleeping)', () => {
  const c = clock();
  const f = new Fdb({ ageingMs: 300_000, now: c.now });
  const v = f.addVni(10);
  assert.equal(f.snoop(v, 0x0200000000a1, V1, 4789, c.t), 'new');
  c.t += 100_000;
  assert.equal(f.snoop(v, 0x0200000000a2, V1, 4789, c.t), 'new');
  assert.equal(f.snoop(v, 0x0200000000a1, V2, 4789, c.t), 'moved');
  assert.equal(v.entries.get(0x0200000000a1)!.vtep, V2);
  c.t += 250_000; // a1 last seen 250 s ago, a2 250 s ago
  assert.equal(f.snoop(v, 0x0200000000a1, V2, 4789, c.t), 'refreshed');
  const lookedUp = f.lookup(v, 0x0200000000a2, c.t);
  assert.equal(lookedUp!.used, c.t, 'lookup stamps used');
  c.t += 60_000; // a2 now 310 s old: expired even though it was looked up (ageing follows the source)
  const next = f.sweep(c.t);
  assert.equal(v.entries.has(0x0200000000a2), false);
  assert.equal(v.entries.has(0x0200000000a1), true);
  assert.equal(next, 300_000 - 60_000, 'sweep returns when the next entry expires');
  assert.equal(v.learned, 1);
  f.set(10, 0x0200000000c1, 'kv', { vtep: V1, port: 4789 });
  c.t += 10 * 300_000;
  f.sweep(c.t);
  assert.ok(v.entries.has(0x0200000000c1), 'kv entries never age');
});

test('learning is bounded per VNI and can be off', () => {
  const f = new Fdb({ maxLearned: 3 });
  const v = f.addVni(10);
  for (let i = 1; i <= 3; i++) assert.equal(f.snoop(v, 0x020000000000 + i, V1, 4789, 0), 'new');
  assert.equal(f.snoop(v, 0x020000000099, V1, 4789, 0), 'full');
  assert.equal(v.entries.size, 3);
  const off = f.addVni(11, false);
  assert.equal(f.snoop(off, 0x020000000001, V1, 4789, 0), 'refused');
  assert.equal(off.entries.size, 0);
  assert.deepEqual(f.size(), { local: 0, static: 0, kv: 0, learned: 3, flood: 0 });
});

test('dump shows where every MAC lives, with the flood list as all-zeros rows', () => {
  const c = clock();
  const f = new Fdb({ now: c.now });
  f.addVni(10);
  f.floodAdd(10, V2, 4789, 'static');
  f.set(10, 0x0242c6130102, 'kv', { vtep: V1, port: 8472 });
  const rows = f.dump();
  assert.deepEqual(
    rows.map((r) => [r.mac, r.kind, r.dst]),
    [
      ['02:42:c6:13:01:02', 'kv', '198.18.0.1:8472'],
      ['00:00:00:00:00:00', 'static', '198.18.0.2:4789'],
    ],
  );
});

test('MacTable: the same answers as a Map keyed by MAC numbers, read in place from a frame too', async () => {
  const { MacTable } = await import('../../src/fdb/mactable.js');
  const { readMac, writeMac } = await import('../../src/vxlan/mac.js');
  const t = new MacTable<number>();
  const ref = new Map<number, number>();
  const edge = [
    0, 1, 0xffffffff, 0x100000000, 0x7fffffff, 0x80000000, 0xffffffffffff, 0x0242c0a80001, 0x0242c0a80002,
    0x0243c0a80001,
  ];
  const macs = [...edge, ...Array.from({ length: 500 }, () => Math.floor(Math.random() * 2 ** 48))];
  const buf = new Uint8Array(8);
  macs.forEach((m, i) => {
    t.set(m, i);
    ref.set(m, i);
  });
  assert.equal(t.size, ref.size);
  for (const m of macs) {
    assert.equal(t.get(m), ref.get(m));
    writeMac(m, buf, 1);
    assert.equal(readMac(buf, 1), m);
    assert.equal(t.getAt(buf, 1), ref.get(m), `getAt ${m.toString(16)}`);
  }
  assert.equal(t.get(0x0242c0a80003), undefined);
  for (const m of macs.filter((_, i) => i % 3 === 0)) {
    assert.equal(t.delete(m), ref.delete(m));
    assert.equal(t.delete(m), false, 'deleting twice');
  }
  assert.equal(t.size, ref.size);
  assert.deepEqual(
    [...t.values()].sort((a, b) => a - b),
    [...ref.values()].sort((a, b) => a - b),
  );
  for (const m of macs) assert.equal(t.has(m), ref.has(m));
});
