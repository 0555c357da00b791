/**
 * Control-plane figures (issue: "shared control plane"), for the embedded store and for etcd, in one run:
 *
 * 1. Convergence: an endpoint is attached on host A; how long from the attach request until host B (1) has its
 *    MAC in its FDB and (2) gets a first ping reply from it (the attach itself, TAP setup included, is inside
 *    both figures, and reported alone too). Host A has no other endpoint on the probe network, so B cannot reach
 *    it by flooding before the store has told B about it: the figure is the control-plane path
 *    (KV write -> watch -> FDB/ARP on B). B's container retries ARP every 10 ms so the kernel's 1 s retry does not
 *    quantise the result. p50/p99 over N attachments.
 * 2. Scale: 1000 endpoints of a fourth (simulated) host are written straight into the store under its lease;
 *    time until each of 3 agents has all of them in its FDB, the time a restarted agent takes to rebuild its
 *    tables, and every agent's RSS.
 * 3. Forwarding under churn: with those endpoints in place, the simulated host changes `--churn-rate` (50) of
 *    them per second (put, later delete) for `--churn-seconds` (10), while a container on B pings one on A every
 *    2 ms. The agents apply every change on the data plane's thread, so this shows what the control plane costs
 *    the forwarding: ping p50/p99/max and the three agents' CPU during the churn.
 *
 *   node dist/bench/control-plane.js [--n 100] [--scale 1000] [--churn-rate 50] [--churn-seconds 10] [--only embedded|etcd]
 * Writes bench/results/control-plane.{md,json}. Needs root (namespaces) and etcd.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import type { EtcdServer } from '../test/helpers/etcd.js';
import { cpuSec, pct, pingSeries, rssMb, underlayEtcd } from './control-plane/shared.js';
import { type Agent, must, sleep, Topo } from '../test/helpers/topo.js';
import { openKv } from '../src/kv/open.js';
import { keys } from '../src/kv/schema.js';
import { formatIpv4 } from '../src/vxlan/ipv4.js';
import { formatMac } from '../src/vxlan/mac.js';

const { values } = parseArgs({
  options: {
    n: { type: 'string' },
    scale: { type: 'string' },
    'churn-rate': { type: 'string' },
    'churn-seconds': { type: 'string' },
    only: { type: 'string' },
  },
});
const N = Number(values.n ?? 100);
const SCALE = Number(values.scale ?? 1000);
const CHURN_RATE = Number(values['churn-rate'] ?? 50);
const CHURN_SECONDS = Number(values['churn-seconds'] ?? 10);
const RESULTS = resolve(fileURLToPath(import.meta.url), '../../../bench/results');

async function until<T>(f: () => Promise<T>, ok: (v: T) => boolean, ms: number, step = 2): Promise<number> {
  const t0 = performance.now();
  while (performance.now() - t0 < ms) {
    if (ok(await f())) return performance.now() - t0;
    await sleep(step);
  }
  return NaN;
}

/** One ping stream (5 ms apart) from `ns` to `ip`; resolves with ms from start to the first reply. */
function firstReply(ns: string, ip: string, timeoutMs: number): Promise<number> {
  return new Promise((res) => {
    const t0 = performance.now();
    const p = spawn(
      'ip',
      ['netns', 'exec', ns, 'ping', '-n', '-i', '0.005', '-w', String(Math.ceil(timeoutMs / 1000)), ip],
      { stdio: ['ignore', 'pipe', 'ignore'] },
    );
    let done = false;
    p.stdout.on('data', (d: Buffer) => {
      if (!done && /bytes from/.test(d.toString())) {
        done = true;
        res(performance.now() - t0);
        p.kill('SIGINT');
      }
    });
    p.once('exit', () => !done && res(NaN));
  });
}

interface Row {
  store: string;
  n: number;
  attachP50: number;
  attachP99: number;
  fdbP50: number;
  fdbP99: number;
  pingP50: number;
  pingP99: number;
  scaleFill: number[];
  scaleRestart: number;
  rssMb: number[];
  churnEvents: number;
  churnPingP50: number;
  churnPingP99: number;
  churnPingMax: number;
  churnCpu: number[];
}

async function run(store: 'embedded' | 'etcd'): Promise<Row> {
  const topo = new Topo();
  let etcd: EtcdServer | undefined;
  try {
    const hA = topo.host('ha');
    const hB = topo.host('hb');
    const hC = topo.host('hc');
    let kvSpec = join(topo.dir, 'store.db');
    let benchKv = kvSpec;
    if (store === 'etcd') {
      etcd = await underlayEtcd(topo);
      kvSpec = `etcd://${etcd.endpoint}`;
      benchKv = kvSpec;
    }
    const agents: Record<string, Agent> = {};
    for (const [k, h] of [
      ['a', hA],
      ['b', hB],
      ['c', hC],
    ] as const)
      agents[k] = await topo.agent(h, { kv: kvSpec });
    await agents.a.call('POST', '/v1/networks', { name: 'probe', subnet: '198.19.100.0/22' });
    const b1 = topo.ns('b1', { quiet: true });
    await sleep(200);
    await agents.b.call('POST', '/v1/endpoints', { network: 'probe', netns: b1, name: 'b1' });
    for (const k of ['retrans_time_ms=10', 'mcast_solicit=50', 'ucast_solicit=50'])
      must(['ip', 'netns', 'exec', b1, 'sysctl', '-qw', `net.ipv4.neigh.eth0.${k}`]);

    // 1. convergence
    const fdb: number[] = [];
    const pingMs: number[] = [];
    const attachMs: number[] = [];
    const a1 = topo.ns('a1', { quiet: true });
    for (let i = 0; i < N; i++) {
      // the MAC is chosen here so B's FDB can be watched from the moment the request goes out
      const mac = formatMac(0x02bb00000000 + i);
      const t0 = performance.now();
      const attached = agents.a.call<{ ip: string }>('POST', '/v1/endpoints', {
        network: 'probe',
        netns: a1,
        name: `p${i}`,
        mac,
      });
      const inFdb = until(
        async () => (await agents.b.call<{ mac: string }[]>('GET', '/v1/fdb?network=probe')).some((r) => r.mac === mac),
        (v) => v,
        5000,
      );
      const ep = await attached;
      const tA = performance.now() - t0;
      const p = await firstReply(b1, ep.ip, 5000); // includes spawning ping: an overestimate of a few ms
      fdb.push(await inFdb);
      attachMs.push(tA);
      pingMs.push(tA + p);
      await agents.a.call('DELETE', `/v1/endpoints/p${i}`);
      must(['ip', 'netns', 'exec', b1, 'ip', 'neigh', 'flush', 'dev', 'eth0']);
      await sleep(30);
      process.stderr.write(`\r${store}: convergence ${i + 1}/${N}`);
    }
    process.stderr.write('\n');

    // 2. scale: a simulated fourth host with SCALE endpoints on network 'big'
    await agents.a.call('POST', '/v1/networks', { name: 'big', subnet: '198.19.128.0/17' });
    // an endpoint of big on each agent: an agent makes forwarding tables only for networks it has endpoints on
    for (const [i, k] of ['a', 'b', 'c'].entries()) {
      await until(
        async () => (await agents[k].call<{ name: string }[]>('GET', '/v1/networks')).some((n) => n.name === 'big'),
        (v) => v,
        10_000,
      );
      const n = topo.ns(`big${k}`, { quiet: true });
      await agents[k].call('POST', '/v1/endpoints', {
        network: 'big',
        netns: n,
        name: `big${k}`,
        ip: `198.19.255.${201 + i}`,
      });
    }
    const kv = await openKv(benchKv);
    const lease = await kv.grantLease(60);
    await kv.put(keys.host('sim'), JSON.stringify({ vtep: '198.18.0.200', port: 4789 }), lease.id);
    const t0 = performance.now();
    for (let i = 0; i < SCALE; i += 100) {
      const ops = [];
      for (let j = i; j < Math.min(SCALE, i + 100); j++) {
        const mac = formatMac(0x02aa00000000 + j);
        const ip = formatIpv4(0xc6138000 + 2 + j);
        ops.push({
          type: 'put' as const,
          key: keys.endpoint('big', mac),
          value: JSON.stringify({ ip, host: 'sim', name: `s${j}`, aliases: [] }),
          lease: lease.id,
        });
      }
      await kv.txn([], ops);
    }
    const count = async (a: Agent) => (await a.call<{ vnis: unknown; fdb: { kv: number } }>('GET', '/v1/stats')).fdb.kv;
    const fills: number[] = [];
    for (const k of ['a', 'b', 'c']) {
      const waited = await until(
        () => count(agents[k]),
        (n) => n >= SCALE,
        30_000,
        10,
      );
      // a wait that ran out is a failure, reported as such ("timeout"), never as a time
      fills.push(Number.isFinite(waited) ? performance.now() - t0 : NaN);
    }
    const rss = ['a', 'b', 'c'].map((k) => rssMb(agents[k].proc.pid!));
    await topo.stopAgent(agents.c);
    const r0 = performance.now();
    agents.c = await topo.agent(hC, { kv: kvSpec });
    const rebuilt = await until(
      () => count(agents.c),
      (n) => n >= SCALE,
      30_000,
      5,
    );
    const restart = Number.isFinite(rebuilt) ? performance.now() - r0 : NaN;
    rss[2] = rssMb(agents.c.proc.pid!);

    // 3. forwarding under churn: SCALE endpoints stay; CHURN_RATE of the simulated host's change per second
    const q = await agents.a.call<{ ip: string }>('POST', '/v1/endpoints', { network: 'probe', netns: a1, name: 'q' });
    await until(
      () => firstReply(b1, q.ip, 3000),
      (ms) => Number.isFinite(ms),
      10_000,
      10,
    );
    const pids = ['a', 'b', 'c'].map((k) => agents[k].proc.pid!);
    const cpu0 = pids.map(cpuSec);
    const pinging = pingSeries(b1, q.ip, CHURN_SECONDS).then((p) => p.rtts);
    let events = 0;
    const tc = performance.now();
    const val = (j: number) =>
      JSON.stringify({ ip: formatIpv4(0xc6138000 + 2 + j), host: 'sim', name: `s${j}`, aliases: [] });
    while (performance.now() - tc < CHURN_SECONDS * 1000) {
      const j = SCALE + (events % 64); // 64 extra endpoints, each put then (64 events later) deleted
      const key = keys.endpoint('big', formatMac(0x02aa00000000 + j));
      if (Math.floor(events / 64) % 2 === 0) await kv.put(key, val(j), lease.id);
      else await kv.delete(key);
      events++;
      const due = tc + (events * 1000) / CHURN_RATE;
      await sleep(Math.max(0, due - performance.now()));
    }
    const rtts = await pinging;
    const churnCpu = pids.map((pid, i) => (cpuSec(pid) - cpu0[i]) / CHURN_SECONDS);
    await agents.a.call('DELETE', '/v1/endpoints/q');
    await lease.revoke();
    await kv.close();
    return {
      store,
      n: N,
      attachP50: pct(attachMs, 50),
      attachP99: pct(attachMs, 99),
      fdbP50: pct(fdb, 50),
      fdbP99: pct(fdb, 99),
      pingP50: pct(pingMs, 50),
      pingP99: pct(pingMs, 99),
      scaleFill: fills,
      scaleRestart: restart,
      rssMb: rss,
      churnEvents: events,
      churnPingP50: rtts.length ? pct(rtts, 50) : NaN,
      churnPingP99: rtts.length ? pct(rtts, 99) : NaN,
      churnPingMax: rtts.length ? Math.max(...rtts) : NaN,
      churnCpu,
    };
  } finally {
    await etcd?.stop();
    await topo.cleanup();
  }
}

const rows: Row[] = [];
for (const s of ['embedded', 'etcd'] as const) if (!values.only || values.only === s) rows.push(await run(s));
const f = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : 'timeout');
const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : 'timeout');
const md = [
  `Control plane, ${new Date().toISOString()}, ${N} attachments, ${SCALE} endpoints at scale (3 agents)`,
  '',
  `| store | attach on A (ms) p50 / p99 | attach request -> MAC in B's FDB p50 / p99 | attach request -> first ping reply from B p50 / p99 | ${SCALE} endpoints in all 3 FDBs (ms) | restarted agent rebuilt (ms) | agent RSS (MB) |`,
  '|---|---|---|---|---|---|---|',
  ...rows.map(
    (r) =>
      `| ${r.store} | ${f(r.attachP50)} / ${f(r.attachP99)} | ${f(r.fdbP50)} / ${f(r.fdbP99)} | ${f(r.pingP50)} / ${f(r.pingP99)} | ${r.scaleFill.map(f).join(', ')} | ${f(r.scaleRestart)} | ${r.rssMb.map((x) => x.toFixed(0)).join(', ')} |`,
  ),
  '',
  `Forwarding while the simulated host changes ${CHURN_RATE} of its endpoints per second (${CHURN_SECONDS} s; ${SCALE} endpoints on the network), ping every 2 ms from B's container to A's:`,
  '',
  "| store | changes applied | ping p50 / p99 / max (ms) | agents' CPU during the churn (cores: A, B, C) |",
  '|---|---|---|---|',
  ...rows.map(
    (r) =>
      `| ${r.store} | ${r.churnEvents} | ${f2(r.churnPingP50)} / ${f2(r.churnPingP99)} / ${f2(r.churnPingMax)} | ${r.churnCpu.map((x) => x.toFixed(2)).join(', ')} |`,
  ),
].join('\n');
console.log(md);
mkdirSync(RESULTS, { recursive: true });
writeFileSync(join(RESULTS, 'control-plane.md'), md + '\n');
writeFileSync(join(RESULTS, 'control-plane.json'), JSON.stringify(rows, null, 2));
const timedOut = rows.filter((r) => !r.scaleFill.every(Number.isFinite) || !Number.isFinite(r.scaleRestart));
if (timedOut.length)
  console.error(`control-plane: a wait ran out (${timedOut.map((r) => r.store).join(', ')}): see "timeout" above`);
process.exit(timedOut.length ? 1 : 0);
