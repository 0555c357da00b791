/**
 * The cluster state -> forwarding tables step (src/agent/tables.ts, src/kv/schema.ts ClusterState/Changes).
 * The incremental path (a batch of changes, O(changes)) must leave exactly the tables a rebuild from scratch
 * gives (syncNetwork on a fresh state and FDB): checked after every batch of random puts and deletes, host
 * moves and losses, clashing IPs, malformed records and re-lists that find missed changes.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Fdb, type LocalPort } from '../../src/fdb/fdb.js';
import { Changes, ClusterState, keys } from '../../src/kv/schema.js';
import { KvTables } from '../../src/agent/tables.js';
import { formatMac } from '../../src/vxlan/mac.js';

const SELF = 'h0';
const NETS = new Map([
  ['n1', 101],
  ['n2', 102],
]);

function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

interface Tables {
  entries: string[];
  flood: string[];
  arp: string[];
}

function snapshot(fdb: Fdb<LocalPort>): Tables {
  const out: Tables = { entries: [], flood: [], arp: [] };
  for (const [name, vni] of NETS) {
    const v = fdb.vnet(vni);
    for (const e of v.entries.values()) out.entries.push(`${name} ${formatMac(e.mac)} ${e.kind} ${e.vtep}:${e.port}`);
    for (const r of v.flood) out.flood.push(`${name} ${r.kind} ${r.vtep}:${r.port}`);
    for (const [ip, mac] of v.arp) out.arp.push(`${name} ${ip} ${formatMac(mac)}`);
  }
  for (const k of Object.keys(out) as (keyof Tables)[]) out[k].sort();
  return out;
}

function netValue(vni: number): string {
  return JSON.stringify({ vni, subnet: '198.19.0.0/16', gateway: null, mtu: 1450, learning: true });
}

/** Tables built from scratch from the store's contents (for the `active` networks only). */
function rebuilt(store: Map<string, string>, active: (n: string) => boolean = () => true): Tables {
  const st = new ClusterState();
  st.replace([...store].map(([key, value]) => ({ key, value })));
  const fdb = new Fdb<LocalPort>();
  for (const vni of NETS.values()) fdb.addVni(vni);
  const t = new KvTables(fdb, st, SELF, active);
  for (const [name, vni] of NETS) t.syncNetwork(name, vni);
  return snapshot(fdb);
}

test('incremental table updates equal a rebuild after every batch (random puts, deletes, moves, clashes, re-lists)', () => {
  for (let seed = 1; seed <= 12; seed++) {
    const r = rng(seed);
    const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)];
    const store = new Map<string, string>();
    const st = new ClusterState();
    const fdb = new Fdb<LocalPort>();
    for (const vni of NETS.values()) fdb.addVni(vni);
    const tables = new KvTables(fdb, st, SELF);
    for (const [name, vni] of NETS) store.set(keys.network(name), netValue(vni));
    const hosts = ['h0', 'h1', 'h2', 'h3', 'h4'];
    // an IPv6 VTEP among them: an IPv4 agent gives its host nothing, on both paths alike
    const vteps = ['198.18.0.1', '198.18.0.2', '198.18.0.3', '198.18.0.9', '2001:db8:18::9'];
    const macs = Array.from({ length: 24 }, (_, i) => formatMac(0x02aa00000000 + i));
    const ips = Array.from({ length: 10 }, (_, i) => `198.19.0.${i + 2}`); // fewer IPs than MACs: clashes happen
    for (const h of hosts) store.set(keys.host(h), JSON.stringify({ vtep: pick(vteps), port: 4789 }));
    // the first sync is a re-list of everything
    tables.apply(st.replace([...store].map(([key, value]) => ({ key, value }))), NETS);
    assert.deepEqual(snapshot(fdb), rebuilt(store), `seed ${seed}: first sync`);
    for (let batch = 0; batch < 150; batch++) {
      const ch = new Changes();
      const missed = r() < 0.1; // these changes reach the store but no watch: the next re-list finds them
      const n = 1 + Math.floor(r() * 6);
      for (let i = 0; i < n; i++) {
        const x = r();
        let key: string;
        let value: string | null;
        if (x < 0.55) {
          key = keys.endpoint(pick([...NETS.keys()]), pick(macs));
          value = JSON.stringify({ ip: pick(ips), host: pick(hosts), name: 'e', aliases: [] });
        } else if (x < 0.8) {
          key = keys.endpoint(pick([...NETS.keys()]), pick(macs));
          value = null;
        } else if (x < 0.9) {
          key = keys.host(pick(hosts));
          value = JSON.stringify({ vtep: pick(vteps), port: pick([4789, 4790]) });
        } else if (x < 0.95) {
          key = keys.host(pick(hosts));
          value = null;
        } else {
          key = pick([keys.host(pick(hosts)), keys.endpoint('n1', pick(macs))]);
          value = '{"not": "a record"'; // malformed: counted and treated as absent
        }
        if (value === null) store.delete(key);
        else store.set(key, value);
        if (!missed) st.apply(key, value, ch);
      }
      if (!missed) tables.apply(ch, NETS);
      if (missed || r() < 0.1) tables.apply(st.replace([...store].map(([key, value]) => ({ key, value }))), NETS);
      else continue;
      assert.deepEqual(snapshot(fdb), rebuilt(store), `seed ${seed}, batch ${batch} (after a re-list)`);
    }
    // every batch that was applied by watch, compared at the end too
    assert.deepEqual(snapshot(fdb), rebuilt(store), `seed ${seed}: end`);
  }
});

test('incremental: after each watch batch the tables equal a rebuild', () => {
  const r = rng(99);
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)];
  const store = new Map<string, string>([
    [keys.network('n1'), netValue(101)],
    [keys.network('n2'), netValue(102)],
  ]);
  const st = new ClusterState();
  const fdb = new Fdb<LocalPort>();
  for (const vni of NETS.values()) fdb.addVni(vni);
  const tables = new KvTables(fdb, st, SELF);
  tables.apply(st.replace([...store].map(([key, value]) => ({ key, value }))), NETS);
  for (let batch = 0; batch < 400; batch++) {
    const ch = new Changes();
    for (let i = 0; i < 3; i++) {
      const x = r();
      const key =
        x < 0.8
          ? keys.endpoint(pick(['n1', 'n2']), formatMac(0x02bb00000000 + Math.floor(r() * 16)))
          : keys.host(pick(['h0', 'h1', 'h2']));
      const del = r() < 0.3;
      const value = del
        ? null
        : x < 0.8
          ? JSON.stringify({
              ip: `198.19.0.${2 + Math.floor(r() * 6)}`,
              host: pick(['h0', 'h1', 'h2', 'h3']),
              name: 'e',
              aliases: [],
            })
          : JSON.stringify({ vtep: pick(['198.18.0.1', '198.18.0.2', '198.18.0.3']), port: 4789 });
      if (value === null) store.delete(key);
      else store.set(key, value);
      st.apply(key, value, ch);
    }
    tables.apply(ch, NETS);
    assert.deepEqual(snapshot(fdb), rebuilt(store), `batch ${batch}`);
  }
});

test('re-list: an unchanged listing changes nothing and parses nothing; a changed one reports only the differences', () => {
  const st = new ClusterState();
  const entries = [
    { key: keys.network('n1'), value: netValue(101) },
    { key: keys.host('h1'), value: JSON.stringify({ vtep: '198.18.0.2', port: 4789 }) },
    ...Array.from({ length: 50 }, (_, i) => ({
      key: keys.endpoint('n1', formatMac(0x02cc00000000 + i)),
      value: JSON.stringify({ ip: `198.19.1.${i + 2}`, host: 'h1', name: `e${i}`, aliases: [] }),
    })),
    { key: keys.endpoint('n1', '02:cc:00:00:00:ff'), value: 'garbage' },
    { key: keys.guardNetworks, value: 'ignored: not a record key' },
  ];
  const first = st.replace(entries);
  assert.equal(first.networks.size, 1);
  assert.equal(first.hosts.size, 1);
  assert.equal(first.endpoints.get('n1')?.size, 51);
  assert.equal(st.invalid, 1, 'the malformed endpoint is counted once');
  const same = st.replace(entries);
  assert.ok(same.full);
  assert.equal(same.networks.size + same.hosts.size + same.endpoints.size, 0, 'nothing differs');
  assert.equal(st.invalid, 1, 'an unchanged malformed record is not counted again');
  const changed = [...entries];
  changed.splice(5, 1); // one endpoint gone
  changed[2] = {
    key: changed[2].key,
    value: JSON.stringify({ ip: '198.19.1.200', host: 'h1', name: 'moved', aliases: [] }),
  };
  const diff = st.replace(changed);
  assert.deepEqual(
    [...(diff.endpoints.get('n1')?.keys() ?? [])].sort(),
    [entries[2].key, entries[5].key].map((k) => k.split('/').pop()).sort(),
  );
  assert.equal(
    diff.endpoints.get('n1')?.get(entries[5].key.split('/').pop()!)?.ip,
    '198.19.1.5',
    'the change carries the record from before',
  );
  assert.equal(st.endpoints.get('n1')?.size, 49);
  assert.equal(st.ipOwner('n1', '198.19.1.200')?.name, 'moved');
  assert.equal(st.ipOwner('n1', '198.19.1.2'), null, 'the old address has no owner');
  assert.equal(st.hostCount('n1', 'h1'), 49);
});

test('syncNetwork: own endpoints get no kv entry and no flood row; a host without a record gets neither; clashing IPs answer with the lowest MAC', () => {
  const st = new ClusterState();
  const fdb = new Fdb<LocalPort>();
  fdb.addVni(101);
  const t = new KvTables(fdb, st, SELF);
  const ep = (mac: string, ip: string, host: string) => ({
    key: keys.endpoint('n1', mac),
    value: JSON.stringify({ ip, host, name: 'e', aliases: [] }),
  });
  st.replace([
    { key: keys.network('n1'), value: netValue(101) },
    { key: keys.host('h0'), value: JSON.stringify({ vtep: '198.18.0.1', port: 4789 }) },
    { key: keys.host('h1'), value: JSON.stringify({ vtep: '198.18.0.2', port: 4789 }) },
    ep('02:00:00:00:00:01', '198.19.0.2', 'h0'),
    ep('02:00:00:00:00:03', '198.19.0.3', 'h1'),
    ep('02:00:00:00:00:02', '198.19.0.3', 'h1'), // clashes with :03
    ep('02:00:00:00:00:04', '198.19.0.4', 'h2'), // h2 has no host record
  ]);
  t.syncNetwork('n1', 101);
  const v = fdb.vnet(101);
  assert.deepEqual([...v.entries.values()].map((e) => formatMac(e.mac)).sort(), [
    '02:00:00:00:00:02',
    '02:00:00:00:00:03',
  ]);
  assert.deepEqual(
    v.flood.map((r) => r.vtep),
    [0xc6120002],
  );
  assert.equal(formatMac(v.arp.get(0xc6130003)!), '02:00:00:00:00:02');
  assert.equal(v.arp.size, 3, 'ARP covers every endpoint, own and hostless ones too');
  // a static flood row for h1's VTEP hides the kv one; the kv one is not doubled
  fdb.floodDel(101, 0xc6120002, 4789, 'kv');
  fdb.floodAdd(101, 0xc6120002, 4789, 'static');
  t.syncNetwork('n1', 101);
  assert.deepEqual(
    v.flood.map((r) => r.kind),
    ['static'],
  );
});

test('tables only for active networks: none for the others, whole when one turns active, empty when it stops', () => {
  for (let seed = 1; seed <= 8; seed++) {
    const r = rng(seed);
    const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)];
    const store = new Map<string, string>();
    const st = new ClusterState();
    const fdb = new Fdb<LocalPort>();
    for (const vni of NETS.values()) fdb.addVni(vni);
    const active = new Set(['n1']);
    const isActive = (n: string) => active.has(n);
    const tables = new KvTables(fdb, st, SELF, isActive);
    for (const [name, vni] of NETS) store.set(keys.network(name), netValue(vni));
    const hosts = ['h1', 'h2', 'h3'];
    for (const h of hosts)
      store.set(keys.host(h), JSON.stringify({ vtep: `198.18.0.${hosts.indexOf(h) + 1}`, port: 4789 }));
    const macs = Array.from({ length: 16 }, (_, i) => formatMac(0x02aa00000000 + i));
    tables.apply(st.replace([...store].map(([key, value]) => ({ key, value }))), NETS);
    for (let batch = 0; batch < 120; batch++) {
      if (r() < 0.15) {
        // an endpoint of this host arrives on n2 or the last one leaves: Endpoints syncs the network whole
        if (active.has('n2')) active.delete('n2');
        else active.add('n2');
        tables.syncNetwork('n2', NETS.get('n2')!);
      }
      const ch = new Changes();
      for (let i = 0; i < 1 + Math.floor(r() * 4); i++) {
        const key = keys.endpoint(pick([...NETS.keys()]), pick(macs));
        const value =
          r() < 0.6
            ? JSON.stringify({ ip: `198.19.0.${2 + Math.floor(r() * 30)}`, host: pick(hosts), name: 'e', aliases: [] })
            : null;
        if (value === null) store.delete(key);
        else store.set(key, value);
        st.apply(key, value, ch);
      }
      tables.apply(ch, NETS);
      assert.deepEqual(snapshot(fdb), rebuilt(store, isActive), `seed ${seed}, batch ${batch}`);
    }
    // and an inactive network really has nothing
    active.delete('n2');
    tables.syncNetwork('n2', NETS.get('n2')!);
    const v = fdb.vnet(NETS.get('n2')!);
    assert.equal([...v.entries.values()].filter((e) => e.kind === 'kv').length, 0);
    assert.equal(v.flood.filter((f) => f.kind === 'kv').length, 0);
    assert.equal(v.arp.size, 0);
  }
});

test('a host whose VTEP is of the other family gets no entries or rows, and is reported once', () => {
  const store = new Map<string, string>([
    [keys.network('n1'), netValue(101)],
    [keys.host('h4'), JSON.stringify({ vtep: '198.18.0.4', port: 4789 })],
    [keys.host('h6'), JSON.stringify({ vtep: '2001:db8:18::6', port: 4789 })],
    [
      keys.endpoint('n1', '02:aa:00:00:00:04'),
      JSON.stringify({ ip: '198.19.0.4', host: 'h4', name: 'e4', aliases: [] }),
    ],
    [
      keys.endpoint('n1', '02:aa:00:00:00:06'),
      JSON.stringify({ ip: '198.19.0.6', host: 'h6', name: 'e6', aliases: [] }),
    ],
  ]);
  for (const family of [4, 6] as const) {
    const st = new ClusterState();
    const fdb = new Fdb<LocalPort>();
    for (const vni of NETS.values()) fdb.addVni(vni);
    const told: string[] = [];
    const t = new KvTables(
      fdb,
      st,
      SELF,
      () => true,
      family,
      (h) => told.push(h.host),
    );
    t.apply(st.replace([...store].map(([key, value]) => ({ key, value }))), NETS);
    t.syncNetwork('n1', 101);
    const v = fdb.vnet(101);
    const reachable = family === 4 ? 'h4' : 'h6';
    const other = family === 4 ? 'h6' : 'h4';
    const mac = (h: string) => Number(`0x02aa0000000${h.slice(1)}`);
    assert.equal(v.entries.get(mac(reachable))?.kind, 'kv', `IPv${family}: ${reachable} reachable`);
    assert.equal(v.entries.get(mac(other)), undefined, `IPv${family}: ${other} is not`);
    assert.equal(v.flood.length, 1, `IPv${family}: one flood row`);
    assert.deepEqual(told, [other], 'reported once, though looked at on both paths');
  }
});
