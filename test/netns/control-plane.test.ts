/**
 * The shared control plane against a real etcd, and how it behaves under faults. Three hosts (h1, h2, h3), each
 * with an agent on one etcd (lease TTL 3 s so host death is quick to see), containers c1 (h1), c2 (h2), c3 (h3).
 * Measured figures are printed as `# ...` lines; they are reported, never asserted against a clock (the timed
 * figures live in bench/control-plane.ts). The one bound here is the restart outage, a promise of the README,
 * checked at ten times what bench/results records, so a real regression fails and a slow machine does not.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { startEtcd, type EtcdServer } from '../helpers/etcd.js';
import { type Agent, isRoot, must, ping, poll, seesNetwork, sh, Topo, waitPing } from '../helpers/topo.js';

const skip = isRoot() ? false : 'needs root (network namespaces)';
const TTL = 3;
let topo: Topo;
let etcd: EtcdServer;
const hosts: Record<string, { ns: string; addr: string; ifname: string }> = {};
const ag: Record<string, Agent> = {};
const ns: Record<string, string> = {};
const mac: Record<string, string> = {};

type Net = { name: string; vni: number };

async function startAgent(h: string): Promise<Agent> {
  ag[h] = await topo.agent(hosts[h], { kv: `etcd://${etcd.endpoint}`, extra: ['--lease-ttl', String(TTL)] });
  return ag[h];
}

/** Revokes a lease as an operator would (etcdctl lease revoke), from a host namespace: etcd lives on the underlay. */
function revokeLease(id: string): void {
  const js = `import { Etcd3 } from 'etcd3'; const c = new Etcd3({ hosts: 'http://${etcd.endpoint}' }); await c.leaseClient.leaseRevoke({ ID: '${id}' }); c.close();`;
  const rv = sh(['ip', 'netns', 'exec', hosts.h1.ns, 'node', '--input-type=module', '-e', js]);
  assert.equal(rv.code, 0, `lease revoke: ${rv.stderr}`);
}

const fdbHas = async (a: Agent, network: string, m: string) =>
  (await a.call<{ mac: string }[]>('GET', `/v1/fdb?network=${network}`)).some((r) => r.mac === m);

before(async () => {
  if (skip) return;
  topo = new Topo();
  etcd = await startEtcd(topo.service()); // on the underlay, where the agents' host namespaces reach it
  for (const h of ['h1', 'h2', 'h3']) hosts[h] = topo.host(h);
  for (const h of ['h1', 'h2', 'h3']) await startAgent(h);
  await ag.h1.call('POST', '/v1/networks', { name: 'blue', subnet: '198.19.1.0/24' });
  for (const [h, c] of [
    ['h1', 'c1'],
    ['h2', 'c2'],
    ['h3', 'c3'],
  ]) {
    ns[c] = topo.ns(c, { quiet: true });
    await poll(
      () => ag[h].call<Net[]>('GET', '/v1/networks'),
      (n) => n.length > 0,
      2000,
    );
    mac[c] = (
      await ag[h].call<{ mac: string }>('POST', '/v1/endpoints', { network: 'blue', netns: ns[c], name: c })
    ).mac;
  }
});

after(async () => {
  if (etcd) await etcd.stop();
  if (topo) await topo.cleanup();
});

test('a network created on one host becomes visible on every host; VNIs come from the store', { skip }, async () => {
  const t0 = Date.now();
  const created = await ag.h2.call<Net>('POST', '/v1/networks', { name: 'green', subnet: '198.19.2.0/24' });
  const seen = await Promise.all(
    ['h1', 'h3'].map((h) =>
      poll(
        () => ag[h].call<Net[]>('GET', '/v1/networks'),
        (l) => l.some((n) => n.name === 'green'),
        20_000,
      ),
    ),
  );
  const worst = Date.now() - t0;
  for (const s of seen) assert.ok(s.v.some((n) => n.name === 'green' && n.vni === created.vni));
  console.log(`# network visible on all 3 hosts ${worst} ms after create (etcd)`);
  assert.ok(await waitPing(ns.c1, `198.19.1.3`), 'c1 -> c3 across hosts (addresses allocated in order .2 .3 .4)');
});

test('conflicts: one winner for a network name, for an address, and VNIs never collide', { skip }, async () => {
  const r = await Promise.allSettled(
    ['h1', 'h2', 'h3'].map((h) => ag[h].call('POST', '/v1/networks', { name: 'race', subnet: '198.19.3.0/24' })),
  );
  assert.equal(r.filter((x) => x.status === 'fulfilled').length, 1, 'exactly one create wins');
  for (const x of r) if (x.status === 'rejected') assert.equal((x.reason as { code: string }).code, 'ERR_EXISTS');
  const many = await Promise.all(
    ['h1', 'h2', 'h3', 'h1', 'h2', 'h3'].map((h, i) =>
      ag[h].call<Net>('POST', '/v1/networks', { name: `auto${i}`, subnet: `198.19.${10 + i}.0/24` }),
    ),
  );
  const vnis = new Set(many.map((n) => n.vni));
  assert.equal(vnis.size, many.length, `distinct VNIs: ${[...vnis]}`);
  const v = await ag.h3
    .call<{ vni: number }>('POST', '/v1/networks', { name: 'fixed', vni: many[0].vni, subnet: '198.19.30.0/24' })
    .catch((e) => e);
  assert.equal(v.code, 'ERR_EXISTS', 'an explicit VNI already taken is refused');
  // two hosts race for one address
  const e1 = topo.ns('e1', { quiet: true });
  const e2 = topo.ns('e2', { quiet: true });
  const ips = await Promise.allSettled([
    ag.h1.call('POST', '/v1/endpoints', { network: 'race', netns: e1, name: 'e1', ip: '198.19.3.50' }),
    ag.h2.call('POST', '/v1/endpoints', { network: 'race', netns: e2, name: 'e2', ip: '198.19.3.50' }),
  ]);
  assert.equal(ips.filter((x) => x.status === 'fulfilled').length, 1, 'exactly one claim of .50 wins');
  const lost = ips.find((x) => x.status === 'rejected') as PromiseRejectedResult;
  assert.equal(lost.reason.code, 'ERR_IN_USE');
  assert.match(lost.reason.message, /198\.19\.3\.50 is already in use on race/);
  // and automatic allocation from two hosts at once never hands out one address twice
  const more = await Promise.all(
    [1, 2, 3, 4].map(async (i) => {
      const n = topo.ns(`f${i}`, { quiet: true });
      return ag[i % 2 ? 'h1' : 'h2'].call<{ ip: string }>('POST', '/v1/endpoints', {
        network: 'race',
        netns: n,
        name: `f${i}`,
      });
    }),
  );
  assert.equal(new Set(more.map((m) => m.ip)).size, 4, `distinct addresses: ${more.map((m) => m.ip)}`);
});

test(
  'KV down: forwarding goes on, new attachments fail clearly, and the agents recover by themselves',
  { skip },
  async () => {
    assert.ok(await waitPing(ns.c2, '198.19.1.2'));
    await etcd.stop(true);
    const t0 = Date.now();
    assert.equal(ping(ns.c2, '198.19.1.2', 5).received, 5, 'c2 -> c1 while etcd is down');
    assert.equal(ping(ns.c1, '198.19.1.3', 5).received, 5, 'c1 -> c3 while etcd is down');
    const n = topo.ns('late', { quiet: true });
    const t1 = Date.now();
    const err = (await ag.h2
      .call('POST', '/v1/endpoints', { network: 'blue', netns: n, name: 'late' })
      .catch((e: unknown) => e)) as { code: string; message: string };
    const failMs = Date.now() - t1;
    assert.equal(err.code, 'ERR_KV_UNAVAILABLE', `attach during the outage: ${err.message}`);
    assert.match(err.message, /KV store .* (failed|reachable)/);
    console.log(`# attach during the etcd outage failed in ${failMs} ms with: ${err.message}`);
    assert.equal(ping(ns.c2, '198.19.1.2', 3).received, 3, 'still forwarding');
    await etcd.restart();
    const outage = Date.now() - t0;
    const back = await poll(
      async () => {
        try {
          return await ag.h2.call<{ name: string }>('POST', '/v1/endpoints', {
            network: 'blue',
            netns: n,
            name: 'late',
          });
        } catch {
          return null;
        }
      },
      (v) => v !== null,
      30_000,
      250,
    );
    assert.ok(back.v, 'attach works again once etcd is back');
    console.log(`# etcd down ${outage} ms; attach succeeded again ${back.ms} ms after etcd restarted`);
    const lateMac = (await ag.h2.call<{ name: string; mac: string }[]>('GET', '/v1/endpoints')).find(
      (e) => e.name === 'late',
    )!.mac;
    const seen = await poll(
      () => fdbHas(ag.h1, 'blue', lateMac),
      (v) => v,
      30_000,
      100,
    );
    assert.ok(seen.v, 'h1 learned the new endpoint from the resumed watch');
    const kvs = (
      await ag.h1.call<{ kv: { reconnects: number; fullSyncs: number; connected: boolean } }>('GET', '/v1/stats')
    ).kv;
    assert.ok(
      kvs.reconnects >= 1 && kvs.fullSyncs >= 2 && kvs.connected,
      `h1 resynced after reconnecting: ${JSON.stringify(kvs)}`,
    );
    const lateIp = (await ag.h2.call<{ name: string; ip: string }[]>('GET', '/v1/endpoints')).find(
      (e) => e.name === 'late',
    )!.ip;
    assert.ok(await waitPing(ns.c1, lateIp), 'c1 reaches the endpoint created after the outage');
  },
);

test(
  'KV hangs (etcd stopped, connections open): forwarding goes on, an attach fails within its timeout, all resumes',
  { skip },
  async () => {
    // a hung store is worse than a dead one: connections stay up and nothing answers. Nothing may wait forever.
    assert.ok(await waitPing(ns.c2, '198.19.1.2'));
    const n = topo.ns('hung', { quiet: true });
    etcd.pause();
    try {
      assert.equal(ping(ns.c2, '198.19.1.2', 5).received, 5, 'c2 -> c1 while etcd hangs');
      const t1 = Date.now();
      const err = (await ag.h2
        .call('POST', '/v1/endpoints', { network: 'blue', netns: n, name: 'hung' })
        .catch((e: unknown) => e)) as { code: string; message: string };
      assert.equal(err.code, 'ERR_KV_UNAVAILABLE', `attach while etcd hangs: ${err.message}`);
      console.log(`# attach while etcd hangs failed after ${Date.now() - t1} ms: ${err.message.slice(0, 160)}`);
      assert.equal(sh(['ip', '-n', n, 'link', 'show', 'eth0']).code, 1, 'the failed attach left no interface');
      assert.equal(ping(ns.c1, '198.19.1.3', 3).received, 3, 'still forwarding both ways');
    } finally {
      etcd.resume();
    }
    const back = await poll(
      () =>
        ag.h2
          .call<{ name: string }>('POST', '/v1/endpoints', { network: 'blue', netns: n, name: 'hung' })
          .catch(() => null),
      (v) => v !== null,
      30_000,
      250,
    );
    assert.ok(back.ok, 'attach works again once etcd answers');
    await ag.h2.call('DELETE', '/v1/endpoints/hung');
  },
);

test(
  'the host lease revoked behind its back: the agent registers again and its endpoints come back',
  { skip },
  async () => {
    type Kvs = { kv: { lease: string | null; registered: boolean } };
    const lease = (await ag.h2.call<Kvs>('GET', '/v1/stats')).kv.lease;
    assert.ok(lease, 'h2 holds a lease');
    revokeLease(lease);
    // the revoke deletes h2's keys: the others drop c2 ...
    const dropped = await poll(
      () => fdbHas(ag.h1, 'blue', mac.c2),
      (v) => !v,
      10_000,
    );
    assert.ok(dropped.ok, "the revoke removed c2 from h1's FDB");
    // ... until h2 notices (its next keep-alive), takes a new lease and publishes c2 again
    const again = await poll(
      () => ag.h2.call<Kvs>('GET', '/v1/stats'),
      (st) => st.kv.registered && st.kv.lease !== null && st.kv.lease !== lease,
      (TTL + 20) * 1000,
      50,
    );
    assert.ok(again.ok, `h2 registered again: ${JSON.stringify(again.v.kv)}`);
    const back = await poll(
      () => fdbHas(ag.h1, 'blue', mac.c2),
      (v) => v,
      10_000,
    );
    assert.ok(back.ok, "c2 is back in h1's FDB");
    assert.ok(await waitPing(ns.c1, '198.19.1.3'), 'c1 -> c2 works again');
    console.log(
      `# lease revoked: h2 had a new lease ${again.ms} ms later, c2 back in h1's FDB ${back.ms} ms after that`,
    );
  },
);

test('several etcd endpoints: an agent whose first endpoint is dead uses the next one', { skip }, async () => {
  // 198.18.0.251 is on the underlay but nobody is there: connecting to it times out rather than being refused
  const h = topo.host('h4');
  const a = await topo.agent(h, {
    kv: `etcd://198.18.0.251:2379,${etcd.endpoint}`, // and the default lease TTL (10 s)
  });
  try {
    await seesNetwork(a, 'blue', 30_000);
    // requests that land on the dead endpoint time out and are retried on the live one: registration may lag
    const reg = await poll(
      () => a.call<{ kv: { registered: boolean } }>('GET', '/v1/stats'),
      (st) => st.kv.registered,
      30_000,
      50,
    );
    assert.ok(reg.ok, 'registered through the live endpoint');
    console.log(`# first etcd endpoint dead: tables listed, registered ${reg.ms} ms after the tables`);
    const c4 = topo.ns('c4', { quiet: true });
    const e = await a.call<{ ip: string }>('POST', '/v1/endpoints', { network: 'blue', netns: c4, name: 'c4' });
    assert.ok(await waitPing(c4, '198.19.1.2'), 'c4 (on the agent with a dead first endpoint) reaches c1');
    assert.ok(await waitPing(ns.c1, e.ip), 'and c1 reaches c4');
    // at the default lease TTL too, a lease revoked behind the agent's back is noticed and replaced
    type Kvs = { kv: { lease: string | null; registered: boolean } };
    const lease = (await a.call<Kvs>('GET', '/v1/stats')).kv.lease!;
    revokeLease(lease);
    const again = await poll(
      () => a.call<Kvs>('GET', '/v1/stats'),
      (st) => st.kv.registered && st.kv.lease !== null && st.kv.lease !== lease,
      30_000,
      50,
    );
    assert.ok(again.ok, `registered again at the default TTL: ${JSON.stringify(again.v.kv)}`);
    assert.ok(await waitPing(ns.c1, e.ip), 'c1 reaches c4 after the re-registration');
    console.log(`# default TTL (10 s): a revoked lease was replaced ${again.ms} ms later`);
    await a.call('DELETE', '/v1/endpoints/c4');
  } finally {
    await topo.stopAgent(a);
  }
});

test(
  'agent killed (SIGKILL) and restarted: endpoints are re-adopted and traffic resumes; the gap is measured',
  { skip },
  async () => {
    assert.ok(await waitPing(ns.c2, '198.19.1.2'));
    // a bounded ping stream from c2 to c1 (20 ms apart, at most 600 = 12 s), timestamps per reply
    const p = spawn(
      'ip',
      ['netns', 'exec', ns.c2, 'ping', '-D', '-n', '-i', '0.02', '-c', '600', '-W', '1', '198.19.1.2'],
      { stdio: ['ignore', 'pipe', 'ignore'] },
    );
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const flowing = await poll(
      () => (out.match(/bytes from/g) ?? []).length,
      (n) => n >= 20,
      10_000,
    );
    assert.ok(flowing.ok, `the ping stream runs before the kill: ${flowing.v} replies`);
    // as left by an older agent that did not size super-frames: the restarted one must set it again
    must(['ip', '-n', ns.c1, 'link', 'set', 'dev', 'eth0', 'gso_max_segs', '65535']);
    const killedAt = Date.now();
    process.kill(ag.h1.proc.pid!, 'SIGKILL'); // `sh -c exec ip netns exec ... node`: the pid is the agent's
    await new Promise((r) => ag.h1.proc.once('exit', r));
    await startAgent('h1');
    const restartedAt = Date.now();
    await new Promise((r) => p.once('exit', r));
    const replies = [...out.matchAll(/^\[(\d+\.\d+)\] \d+ bytes from/gm)].map((m) => Number(m[1]) * 1000);
    let gap = 0;
    for (let i = 1; i < replies.length; i++) gap = Math.max(gap, replies[i] - replies[i - 1]);
    const summary = `${replies.length}/600 replies, longest gap ${gap.toFixed(0)} ms`;
    assert.ok(replies.length > 0 && replies[replies.length - 1] > restartedAt, `replies after the restart: ${summary}`);
    // the README's promise: a restart costs well under a second of traffic (bench/results records 0.3-1 s);
    // 3 s is the bound, and apart from that one gap no reply is missing
    assert.ok(gap < 3000, `restart outage: ${summary}`);
    assert.ok(600 - replies.length <= Math.ceil(gap / 20) + 10, `replies lost outside the gap: ${summary}`);
    const eps = await ag.h1.call<{ name: string }[]>('GET', '/v1/endpoints');
    assert.ok(
      eps.some((e) => e.name === 'c1'),
      'c1 re-adopted',
    );
    const link = JSON.parse(must(['ip', '-n', ns.c1, '-j', '-d', 'link', 'show', 'dev', 'eth0']))[0];
    assert.equal(link.gso_max_segs, 44, 'the re-adopted TAP sizes super-frames for one UDP GSO send again');
    console.log(
      `# agent restart: longest gap between replies ${gap.toFixed(0)} ms (kill -> agent serving again ${restartedAt - killedAt} ms), ${replies.length}/600 replies`,
    );
  },
);

test('host killed: its endpoints vanish from every other host after the lease TTL', { skip }, async () => {
  assert.ok(await fdbHas(ag.h1, 'blue', mac.c3));
  const t0 = Date.now();
  process.kill(ag.h3.proc.pid!, 'SIGKILL');
  const gone = await poll(
    () => fdbHas(ag.h1, 'blue', mac.c3),
    (v) => !v,
    (TTL + 30) * 1000,
    50,
  );
  const ms = Date.now() - t0;
  assert.equal(gone.v, false, "c3 is out of h1's FDB");
  // a lower bound is a correctness check (the lease, not something else, removed it); the upper one is measured
  assert.ok(ms >= TTL * 500, `removed ${ms} ms after the kill, before its lease (TTL ${TTL} s) could expire`);
  const fdb = await ag.h1.call<{ mac: string; dst: string }[]>('GET', '/v1/fdb?network=blue');
  assert.ok(!fdb.some((r) => r.dst.startsWith(`${hosts.h3.addr}:`)), 'no entry and no flood entry points at h3');
  // every agent applies the expiry from its own watch: h2 may trail h1 by a few milliseconds
  const h2view = await poll(
    () => ag.h2.call<{ endpoints: { name: string }[] }>('GET', '/v1/networks/blue'),
    (n) => !n.endpoints.some((e) => e.name === 'c3'),
    30_000,
    20,
  );
  assert.ok(h2view.ok, 'h2 no longer lists c3');
  console.log(`# host killed: its endpoints left the other hosts' tables ${ms} ms later (lease TTL ${TTL} s)`);
});

test('an attach to a network created a moment ago elsewhere waits for it instead of refusing', { skip }, async () => {
  // h5 has just started: its watches (on their own thread) are still coming up when h1 creates the network
  hosts.h5 = topo.host('h5');
  await startAgent('h5');
  await ag.h1.call('POST', '/v1/networks', { name: 'fresh', subnet: '198.19.44.0/24' });
  ns.c5 = topo.ns('c5', { quiet: true });
  const t0 = Date.now();
  const ep = await ag.h5.call<{ ip: string }>('POST', '/v1/endpoints', { network: 'fresh', netns: ns.c5, name: 'c5' });
  assert.equal(ep.ip, '198.19.44.2');
  console.log(`# attach on a just-started agent to a network created elsewhere: ${Date.now() - t0} ms`);
  // a network the store does not have is still refused, with the reason
  await assert.rejects(
    ag.h5.call('POST', '/v1/endpoints', { network: 'nosuch', netns: ns.c5, name: 'c6' }),
    /network "nosuch" not found/,
  );
  await ag.h5.call('DELETE', '/v1/endpoints/c5');
  await ag.h1.call('DELETE', '/v1/networks/fresh');
});
