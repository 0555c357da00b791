/**
 * The control plane at scale, on one etcd (issue 24). A sweep of cluster sizes: for each point, H simulated hosts
 * (each with its own lease, renewed, and its host key) hold E endpoints between them, spread over 8 networks of
 * 198.19.128.0/17 (the same subnet with 8 VNIs: records in the store, never traffic). Two real hosts:
 *
 * - A runs from the start (it takes the whole fill through its watch) and holds one real endpoint, pa, on big0.
 *   An agent makes forwarding tables only for networks it has endpoints on: A's and B's FDBs hold big0's E/8.
 * - B joins once the store is full: the time from starting its agent until its FDB holds big0's endpoints, and
 *   until its own container pb (attached as soon as the agent answers) gets a reply from pa. Then B's agent is
 *   restarted (SIGTERM, start again): the same two times, the endpoint re-adopted.
 * - Churn: the simulated hosts change endpoints of big1 at --churn per second (puts, then deletes) for
 *   --churn-seconds while pb pings pa every 2 ms on big0, an unrelated network: ping p50/p99/max and the agents'
 *   CPU, twice: first with no endpoint of A or B on big1 (agents follow only the networks they have endpoints on,
 *   so the churn should not reach them), then with an endpoint of each on big1 (both follow it and must apply
 *   every change: checked by a last record written after the churn, which B must show).
 *   B's watch batches during each (how many, how many held its thread over 10 ms, the longest) say what of a ping's
 *   pause is the agent's own work.
 * - The store's side: etcd's request rate (leases kept alive, watches) while idle, from its /metrics, and a count of
 *   host keys at the end (a lease that expired spuriously has taken its host key with it).
 * - With 2+ CPUs, this process and etcd run on CPU 0 and the agents and the pinger on the rest (see PIN).
 *
 * Every wait that runs out is reported as "timeout", never as a time, and makes the run exit 1.
 *
 *   node dist/bench/control-plane-scale.js [--endpoints 1000,10000,100000,250000] [--hosts 100]
 *        [--host-sweep 10,1000] [--host-sweep-endpoints 10000] [--churn 2000] [--churn-seconds 10] [--no-pin]
 * Writes bench/results/control-plane-scale.{md,json}. Needs root (namespaces) and etcd.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import type { EtcdServer } from '../test/helpers/etcd.js';
import { cpuSec, pct, pingSeries, rssMb, underlayEtcd } from './control-plane/shared.js';
import { type Agent, must, poll, seesNetwork, Topo } from '../test/helpers/topo.js';
import { availableParallelism } from 'node:os';
import type { Kv, Lease, Op } from '../src/kv/kv.js';
import { openKv } from '../src/kv/open.js';
import { keys } from '../src/kv/schema.js';
import { formatIpv4 } from '../src/vxlan/ipv4.js';
import { formatMac } from '../src/vxlan/mac.js';

const { values } = parseArgs({
  options: {
    endpoints: { type: 'string' },
    hosts: { type: 'string' },
    'host-sweep': { type: 'string' },
    'host-sweep-endpoints': { type: 'string' },
    churn: { type: 'string' },
    'churn-seconds': { type: 'string' },
    'no-pin': { type: 'boolean' },
  },
});
const list = (s: string) => s.split(',').filter(Boolean).map(Number);
const SIZES = list(values.endpoints ?? '1000,10000,100000,250000');
const HOSTS = Number(values.hosts ?? 100);
const HOST_SWEEP = list(values['host-sweep'] ?? '10,1000');
const HOST_SWEEP_E = Number(values['host-sweep-endpoints'] ?? 10000);
const CHURN = Number(values.churn ?? 2000);
const CHURN_SECONDS = Number(values['churn-seconds'] ?? 10);
const RESULTS = resolve(fileURLToPath(import.meta.url), '../../../bench/results');
const NETS = 8;
const WAIT_MS = 120_000;

const progress = (msg: string) => process.stderr.write(`\r\x1b[K${msg}`);

/**
 * The load generator (this process: the fill, the churn's writes, the simulated hosts' keep-alives) and etcd run
 * on CPU 0, the agents and the pinger on the others: on a small machine they would otherwise take the agents'
 * CPU, and the ping figures would measure the bench and etcd rather than the agents (on 2 vCPUs this process and
 * etcd used 1.15 cores during the churn). --no-pin turns it off; with one CPU there is nothing to pin.
 */
const CPUS = availableParallelism();
const PIN = values['no-pin'] || CPUS < 2 ? [] : ['taskset', '-c', `1-${CPUS - 1}`];
if (PIN.length) must(['taskset', '-a', '-p', '-c', '0', String(process.pid)]);

/** etcd's gRPC requests handled so far, by method, from its /metrics. */
async function etcdRequests(endpoint: string): Promise<Record<string, number>> {
  const t = await (await fetch(`http://${endpoint}/metrics`)).text();
  const out: Record<string, number> = {};
  for (const m of t.matchAll(/^grpc_server_handled_total\{[^}]*grpc_method="(\w+)"[^}]*\} ([\d.e+]+)$/gm))
    out[m[1]] = (out[m[1]] ?? 0) + Number(m[2]);
  for (const m of t.matchAll(/^grpc_server_msg_received_total\{[^}]*grpc_method="(\w+)"[^}]*\} ([\d.e+]+)$/gm))
    out[`${m[1]}:msgs`] = (out[`${m[1]}:msgs`] ?? 0) + Number(m[2]);
  const watchers = /^etcd_debugging_mvcc_watcher_total ([\d.e+]+)$/m.exec(t);
  if (watchers) out.watchers = Number(watchers[1]);
  return out;
}

interface Churn {
  applied: boolean;
  changes: number;
  pingP50: number;
  pingP99: number;
  pingMax: number;
  pingLost: number;
  cpu: number[];
  /** scopes B follows during it (networks/, hosts/, and one per network with an endpoint of B) */
  watchesB: number;
  /** B's watch batches during it, those that held its thread over 10 ms, and the longest one since B started */
  batches: number;
  slowBatches: number;
  batchMaxMs: number;
}

type KvStats = { batches: number; slowBatches: number; batchMaxMs: number };

interface Point {
  endpoints: number;
  hosts: number;
  writeMs: number;
  /** ms from the first write until running agent A's FDB held every endpoint */
  fillA: number;
  /** fresh agent B: ms from its start until its FDB held every endpoint, and until its container pinged pa */
  joinFdb: number;
  joinPing: number;
  /** B restarted */
  rebuildFdb: number;
  rebuildPing: number;
  rssA: number;
  rssB: number;
  /** churn on big1 with no endpoint of A or B there */
  churnAway: Churn;
  /** churn on big1 with an endpoint of A and of B there (both apply it) */
  churnFollowed: Churn;
  /** the same ping stream before the churn, with nothing changing */
  idlePingP99: number;
  idlePingMax: number;
  /** etcd requests per second while idle (leases renewed, watches open), by method */
  idleRates: Record<string, number>;
  leasesHeld: number;
  endpointsHeld: number;
  failures: string[];
}

type Stats = { fdb: { kv: number }; kv: { revision: number; registered: boolean; watches: number } };

async function runPoint(E: number, H: number): Promise<Point> {
  const failures: string[] = [];
  const topo = new Topo();
  let etcd: EtcdServer | undefined;
  let kv: Kv | undefined;
  const leases: Lease[] = [];
  const tag = `E=${E} H=${H}`;
  /** ms until `ok`, or NaN (a failure, noted) when WAIT_MS runs out */
  const waitFor = async <T>(what: string, f: () => Promise<T>, ok: (v: T) => boolean, t0: number) => {
    const r = await poll(f, ok, WAIT_MS, 20);
    if (!r.ok) failures.push(`${what}: no result within ${WAIT_MS} ms`);
    return r.ok ? performance.now() - t0 : NaN;
  };
  try {
    etcd = await underlayEtcd(topo);
    if (PIN.length) must(['taskset', '-a', '-p', '-c', '0', String(etcd.proc.pid)]);
    const spec = `etcd://${etcd.endpoint}`;
    kv = await openKv(spec);
    const hA = topo.host('ha');
    const hB = topo.host('hb');
    const agentA = await topo.agent(hA, { kv: spec, wrap: PIN });
    // the networks, straight into the store (as another host's agent would have created them)
    for (let i = 0; i < NETS; i++) {
      const name = `big${i}`;
      const vni = 10_000 + i;
      const rec = { vni, subnet: '198.19.128.0/17', gateway: '198.19.128.1', mtu: 1450, learning: false };
      await kv.txn(
        [],
        [
          { type: 'put', key: keys.network(name), value: JSON.stringify(rec) },
          { type: 'put', key: keys.vni(vni), value: name },
        ],
      );
    }
    // the simulated hosts: a lease each (the agents' default TTL, 10 s), renewed by this process
    progress(`${tag}: ${H} leases`);
    for (let h = 0; h < H; h++) {
      const l = await kv.grantLease(10);
      leases.push(l);
      const vtep = formatIpv4(0xc6120000 + 1000 + h); // 198.18.3.232 and up: addresses only, nobody sends there
      await kv.put(keys.host(`sim${h}`), JSON.stringify({ vtep, port: 4789 }), l.id);
    }
    const rec = (j: number) =>
      JSON.stringify({
        ip: formatIpv4(0xc6138000 + 2 + Math.floor(j / NETS)),
        host: `sim${j % H}`,
        name: `s${j}`,
        aliases: [],
      });
    const put = (j: number): Op => ({
      type: 'put',
      key: keys.endpoint(`big${j % NETS}`, formatMac(0x02cc00000000 + j)),
      value: rec(j),
      lease: leases[j % H].id,
    });
    const a1 = topo.ns('a1', { quiet: true });
    await seesNetwork(agentA, 'big0', WAIT_MS); // written straight into the store: A learns it from its watch
    await agentA.call('POST', '/v1/endpoints', { network: 'big0', netns: a1, name: 'pa', ip: '198.19.255.200' });
    const onBig0 = Math.ceil(E / NETS); // j % NETS === 0
    const t0 = performance.now();
    for (let i = 0; i < E; i += 128) {
      const ops: Op[] = [];
      for (let j = i; j < Math.min(E, i + 128); j++) ops.push(put(j));
      await kv.txn([], ops);
      if (i % 12800 === 0) progress(`${tag}: writing ${i}/${E}`);
    }
    const writeMs = performance.now() - t0;
    progress(`${tag}: A's FDB filling`);
    const statsOf = (ag: Agent) => ag.call<Stats>('GET', '/v1/stats');
    const fillA = await waitFor(
      'A took the fill',
      () => statsOf(agentA),
      (s) => s.fdb.kv >= onBig0,
      t0,
    );

    // a fresh agent joins
    progress(`${tag}: B joins`);
    const b1 = topo.ns('b1', { quiet: true });
    const join = async (): Promise<{ fdb: number; ping: number; agent: Agent }> => {
      const t = performance.now();
      const prof = process.env.VXTAP_PROF_DIR; // a CPU profile of B (node --cpu-prof), for finding where it goes
      const ag = await topo.agent(hB, {
        kv: spec,
        wrap: PIN,
        ...(prof ? { nodeArgs: ['--no-memory-reducer', '--cpu-prof', `--cpu-prof-dir=${prof}`] } : {}),
      });
      const attached = (async () => {
        // the endpoint: attach once the agent is registered, or (after a restart) find it re-adopted
        await poll(
          () => statsOf(ag),
          (s) => s.kv.registered,
          WAIT_MS,
          20,
        );
        const eps = await ag.call<{ name: string }[]>('GET', '/v1/endpoints');
        if (!eps.some((e) => e.name === 'pb'))
          await ag.call('POST', '/v1/endpoints', { network: 'big0', netns: b1, name: 'pb', ip: '198.19.255.201' });
      })();
      const fdb = await waitFor(
        `B's FDB (${tag})`,
        () => statsOf(ag),
        (s) => s.fdb.kv >= onBig0 + 1,
        t,
      );
      await attached;
      const ping = await waitFor(
        `B's container reaches pa (${tag})`,
        async () =>
          new Promise<boolean>((res) => {
            const p = spawn('ip', ['netns', 'exec', b1, 'ping', '-n', '-c', '1', '-W', '1', '198.19.255.200'], {
              stdio: 'ignore',
            });
            p.once('exit', (c) => res(c === 0));
          }),
        (v) => v,
        t,
      );
      return { fdb, ping, agent: ag };
    };
    const first = await join();
    const rssA = rssMb(agentA.proc.pid!);
    const rssB = rssMb(first.agent.proc.pid!);
    progress(`${tag}: B restarts`);
    await topo.stopAgent(first.agent);
    const again = await join();
    const agentB = again.agent;

    // the store's load while idle: 10 s of leases renewed and watches open
    progress(`${tag}: etcd idle load`);
    const r0 = await etcdRequests(etcd.endpoint);
    const idlePing = await pingSeries(b1, '198.19.255.200', 10, PIN); // the same pings with no churn: the baseline
    const r1 = await etcdRequests(etcd.endpoint);
    const idleRates = Object.fromEntries(
      Object.keys(r1)
        .filter((k) => k !== 'watchers')
        .map((k) => [k, Math.round(((r1[k] - (r0[k] ?? 0)) / 10) * 10) / 10] as const)
        .filter(([, v]) => v > 0),
    );
    if (r1.watchers !== undefined) idleRates.watchers = r1.watchers;

    // churn on big1 while pb pings pa on big0: first with neither agent on big1, then with both
    const pids = [agentA.proc.pid!, agentB.proc.pid!];
    const churn = async (label: string, followed: boolean): Promise<Churn> => {
      progress(`${tag}: churn (${label})`);
      const watchesB = (await statsOf(agentB)).kv.watches;
      const kv0 = (await agentB.call<{ kv: KvStats }>('GET', '/v1/stats')).kv;
      const cpu0 = pids.map(cpuSec);
      const pinging = pingSeries(b1, '198.19.255.200', CHURN_SECONDS, PIN);
      const tc = performance.now();
      let changes = 0;
      let churnErrors = 0;
      const inFlight = new Set<Promise<unknown>>();
      const extra = (k: number) => E + NETS * (k % 512) + 1; // on big1 (j % NETS === 1), beyond the E endpoints
      while (performance.now() - tc < CHURN_SECONDS * 1000) {
        const k = changes++;
        const j = extra(k);
        const key = keys.endpoint('big1', formatMac(0x02cc00000000 + j));
        // 512 puts, then the same 512 deleted, and again; up to 64 requests in flight, paced to CHURN per second
        const req: Promise<unknown> = (
          Math.floor(k / 512) % 2 === 0 ? kv!.put(key, rec(j), leases[j % H].id) : kv!.delete(key)
        ).then(
          () => inFlight.delete(req),
          () => (churnErrors++, inFlight.delete(req)),
        );
        inFlight.add(req);
        if (inFlight.size >= 64) await Promise.race(inFlight);
        const wait = tc + (changes * 1000) / CHURN - performance.now();
        if (wait > 1) await new Promise((r) => setTimeout(r, wait));
      }
      await Promise.all(inFlight);
      if (churnErrors) failures.push(`${churnErrors} churn writes failed (${tag}, ${label})`);
      const churnSec = (performance.now() - tc) / 1000;
      const { rtts, sent } = await pinging;
      const cpu = pids.map((p, i) => Math.round(((cpuSec(p) - cpu0[i]) / churnSec) * 100) / 100);
      // for the followed run: a last record on big1 after the churn; B has applied everything once it shows it
      let applied = false;
      if (followed) {
        const marker = await kv!.put(keys.endpoint('big1', formatMac(0x02cd00000000 + changes)), rec(E + 1));
        const caught = await poll(
          () => statsOf(agentB),
          (s) => s.kv.revision >= marker,
          WAIT_MS,
          50,
        );
        applied = caught.ok;
        if (!caught.ok) failures.push(`B did not catch up with the churn (${tag}, ${label})`);
      }
      const kv1 = (await agentB.call<{ kv: KvStats }>('GET', '/v1/stats')).kv;
      return {
        batches: kv1.batches - kv0.batches,
        slowBatches: kv1.slowBatches - kv0.slowBatches,
        batchMaxMs: kv1.batchMaxMs,
        applied,
        changes: Math.round(changes / churnSec),
        pingP50: pct(rtts, 50),
        pingP99: pct(rtts, 99),
        pingMax: rtts.length ? Math.max(...rtts) : NaN,
        pingLost: sent - rtts.length,
        cpu,
        watchesB,
      };
    };
    const churnAway = await churn('agents not on big1', false);
    const qa = topo.ns('qa', { quiet: true });
    const qb = topo.ns('qb', { quiet: true });
    await agentA.call('POST', '/v1/endpoints', { network: 'big1', netns: qa, name: 'qa', ip: '198.19.255.210' });
    await agentB.call('POST', '/v1/endpoints', { network: 'big1', netns: qb, name: 'qb', ip: '198.19.255.211' });
    const churnFollowed = await churn('agents on big1', true);

    // nothing expired that should not have
    const leasesHeld = (await kv.list(keys.hosts)).entries.filter((e) => e.key.startsWith(`${keys.hosts}sim`)).length;
    const simIndex = (key: string) => parseInt(key.slice(-17).replace(/:/g, ''), 16) - 0x02cc00000000;
    const endpointsHeld = (await kv.list(keys.endpoints)).entries.filter((e) => {
      const j = simIndex(e.key);
      return j >= 0 && j < E; // the simulated ones, not pa, pb, qa, qb or the churn's
    }).length;
    if (endpointsHeld !== E) failures.push(`${E - endpointsHeld} simulated endpoints vanished (${tag})`);
    if (leasesHeld !== H) failures.push(`${H - leasesHeld} simulated hosts lost their lease (${tag})`);
    return {
      endpoints: E,
      hosts: H,
      writeMs,
      fillA,
      joinFdb: first.fdb,
      joinPing: first.ping,
      rebuildFdb: again.fdb,
      rebuildPing: again.ping,
      rssA,
      rssB,
      churnAway,
      churnFollowed,
      idlePingP99: pct(idlePing.rtts, 99),
      idlePingMax: idlePing.rtts.length ? Math.max(...idlePing.rtts) : NaN,
      idleRates,
      leasesHeld,
      endpointsHeld,
      failures,
    };
  } finally {
    progress(`${tag}: cleaning up`);
    for (const l of leases) l.release();
    await kv?.close();
    await etcd?.stop();
    await topo.cleanup();
    progress('');
  }
}

/** Least-squares slope and intercept of y over x (the finite pairs). */
function fit(xs: number[], ys: number[]): { slope: number; intercept: number } {
  const pts = xs.map((x, i) => [x, ys[i]]).filter(([, y]) => Number.isFinite(y));
  const n = pts.length;
  if (n < 2) return { slope: NaN, intercept: NaN };
  const mx = pts.reduce((s, [x]) => s + x, 0) / n;
  const my = pts.reduce((s, [, y]) => s + y, 0) / n;
  const sxy = pts.reduce((s, [x, y]) => s + (x - mx) * (y - my), 0);
  const sxx = pts.reduce((s, [x]) => s + (x - mx) ** 2, 0);
  const slope = sxy / sxx;
  return { slope, intercept: my - slope * mx };
}

const points: Point[] = [];
for (const E of SIZES) points.push(await runPoint(E, HOSTS));
for (const H of HOST_SWEEP)
  if (H !== HOSTS || !SIZES.includes(HOST_SWEEP_E)) points.push(await runPoint(HOST_SWEEP_E, H));

const f = (x: number, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : 'timeout');
const g = (x: number, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : '-'); // a fit over fewer than two points
const sweep = points.filter((p) => p.hosts === HOSTS);
const es = sweep.map((p) => p.endpoints);
const memB = fit(
  es,
  sweep.map((p) => p.rssB * 1024 * 1024),
);
const joinT = fit(
  es,
  sweep.map((p) => p.joinFdb * 1000),
);
const rebuildT = fit(
  es,
  sweep.map((p) => p.rebuildFdb * 1000),
);
const failures = points.flatMap((p) => p.failures);
const churnCell = (c: Churn) =>
  `${c.changes}; ${f(c.pingP50, 3)} / ${f(c.pingP99, 3)} / ${f(c.pingMax, 2)}, ${c.pingLost}; ${c.cpu.join(' / ')}; B: ${c.batches} batches, ${c.slowBatches} over 10 ms, longest ${c.batchMaxMs} ms`;
const md = [
  `Control plane at scale, ${new Date().toISOString()}: one etcd, ${NETS} networks, simulated hosts with their own leases (TTL 10 s, renewed); two real agents (A running through the fill, B joining after it). Times in ms.`,
  '',
  "| endpoints | hosts | write (ms) | A's big0 FDB full (ms from first write) | B joins: big0 FDB full / pings pa (ms) | B restarted: FDB full / pings pa (ms) | RSS A / B (MB) | ping on big0, idle: p99 / max ms | churn on big1, agents not on it: changes/s; ping on big0 p50 / p99 / max ms, lost; CPU A / B (cores); B's watch batches | churn on big1, agents on it: the same; all applied | etcd while idle (requests/s; watchers) | leases / endpoints held at the end |",
  '|---|---|---|---|---|---|---|---|---|---|---|---|',
  ...points.map(
    (p) =>
      `| ${p.endpoints} | ${p.hosts} | ${f(p.writeMs)} | ${f(p.fillA)} | ${f(p.joinFdb)} / ${f(p.joinPing)} | ${f(p.rebuildFdb)} / ${f(p.rebuildPing)} | ${f(p.rssA)} / ${f(p.rssB)} | ${f(p.idlePingP99, 3)} / ${f(p.idlePingMax, 2)} | ${churnCell(p.churnAway)} | ${churnCell(p.churnFollowed)}; ${p.churnFollowed.applied ? 'yes' : 'NO'} | ${Object.entries(
        p.idleRates,
      )
        .map(([k, v]) => `${k} ${v}`)
        .join(', ')} | ${p.leasesHeld} / ${p.endpointsHeld} |`,
  ),
  '',
  `Per endpoint, from the ${HOSTS}-host sweep (least squares over ${es.join(', ')}), B following big0 (1/${NETS} of the cluster's endpoints): per endpoint of the cluster a joining agent's memory ${g(memB.slope)} bytes (plus ${g(memB.intercept / 1048576)} MB), its FDB filled in ${g(joinT.slope, 2)} us (plus ${g(joinT.intercept / 1000)} ms), a restarted agent ${g(rebuildT.slope, 2)} us (plus ${g(rebuildT.intercept / 1000)} ms); per endpoint it holds (x ${NETS}): ${g(memB.slope * NETS)} bytes, ${g(joinT.slope * NETS, 2)} us and ${g(rebuildT.slope * NETS, 2)} us.`,
  `Targets (issue 24): a fresh agent forwards within 10 s of joining a 250,000-endpoint cluster; no forwarding pause over 10 ms on an unrelated network during ${CHURN} changes/s.`,
  ...(failures.length ? ['', 'Failures:', ...failures.map((x) => `- ${x}`)] : []),
].join('\n');
console.log(md);
mkdirSync(RESULTS, { recursive: true });
writeFileSync(join(RESULTS, 'control-plane-scale.md'), md + '\n');
writeFileSync(
  join(RESULTS, 'control-plane-scale.json'),
  JSON.stringify({ date: new Date().toISOString(), points, fits: { memB, joinT, rebuildT } }, null, 2),
);
process.exit(failures.length ? 1 : 0);
