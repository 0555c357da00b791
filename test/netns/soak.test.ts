/**
 * Endpoint churn soak: containers are attached and detached in a loop for a bounded time (15 s here;
 * VXTAP_SOAK_SECONDS=600 for a long run) on both hosts while a ping stream flows between two steady containers.
 * Afterwards nothing may have leaked: agent fds, endpoints, FDB entries, KV keys; memory is reported (RSS after a
 * warm-up vs at the end) and must stay within a generous bound.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { EmbeddedKv } from '../../src/kv/embedded.js';
import { keys } from '../../src/kv/schema.js';
import { type Agent, isRoot, must, seesNetwork, Topo, waitPing, sleep } from '../helpers/topo.js';

const skip = isRoot() ? false : 'needs root (network namespaces)';
const SECONDS = Number(process.env.VXTAP_SOAK_SECONDS ?? 15);
let topo: Topo;
const ag: Agent[] = [];
let c1 = '';
let c2 = '';

type Stats = { fdb: Record<string, number>; endpoints: unknown[] };
const fds = (a: Agent) => readdirSync(`/proc/${a.proc.pid}/fd`).length;
const rss = (a: Agent) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${a.proc.pid}/status`, 'utf8'))![1]) / 1024;

before(async () => {
  if (skip) return;
  topo = new Topo();
  ag.push(await topo.agent(topo.host('h1')), await topo.agent(topo.host('h2')));
  await ag[0].call('POST', '/v1/networks', { name: 'blue', subnet: '198.19.0.0/20' });
  await seesNetwork(ag[1], 'blue');
  c1 = topo.ns('c1', { quiet: true });
  c2 = topo.ns('c2', { quiet: true });
  await ag[0].call('POST', '/v1/endpoints', { network: 'blue', netns: c1, name: 'c1', ip: '198.19.0.10' });
  await ag[1].call('POST', '/v1/endpoints', { network: 'blue', netns: c2, name: 'c2', ip: '198.19.0.20' });
  assert.ok(await waitPing(c2, '198.19.0.10'));
});

after(async () => {
  if (topo) await topo.cleanup();
});

async function churn(i: number): Promise<void> {
  const a = ag[i % 2];
  const ns = topo.ns(`s${i}`, { quiet: true });
  const e = await a.call<{ ip: string }>('POST', '/v1/endpoints', { network: 'blue', netns: ns, name: `s${i}` });
  assert.ok(await waitPing(c1, e.ip, 5000), `c1 reaches churned endpoint s${i} at ${e.ip}`);
  await a.call('DELETE', `/v1/endpoints/s${i}`);
  must(['ip', 'netns', 'del', ns]);
}

test(
  `endpoint churn for ${SECONDS} s under traffic: no leaked fds, endpoints, FDB entries or KV keys; memory bounded`,
  { skip, timeout: (SECONDS + 120) * 1000 },
  async () => {
    const store = new EmbeddedKv(join(topo.dir, 'store.db'));
    const kvCount = async () =>
      (await store.list(keys.endpoints)).entries.length + (await store.list('/vxtap/v1/ipam/')).entries.length;
    for (let i = 0; i < 6; i++) await churn(1000 + i); // warm-up: JIT, pools, first allocations
    await sleep(500);
    const snapshot = async () => ({
      fds: ag.map(fds),
      rss: ag.map(rss),
      stats: await Promise.all(ag.map((a) => a.call<Stats>('GET', '/v1/stats'))),
      kv: await kvCount(),
    });
    const base = await snapshot();
    const pinger = spawn(
      'ip',
      ['netns', 'exec', c2, 'ping', '-n', '-q', '-i', '0.02', '-w', String(SECONDS + 5), '198.19.0.10'],
      { stdio: ['ignore', 'pipe', 'ignore'] },
    );
    let pingOut = '';
    pinger.stdout.on('data', (d: Buffer) => (pingOut += d.toString()));
    const end = Date.now() + SECONDS * 1000;
    let n = 0;
    while (Date.now() < end) await churn(n++);
    await new Promise((r) => pinger.once('exit', r));
    await sleep(1000);
    const now = await snapshot();
    await store.close();
    const m = /(\d+) packets transmitted, (\d+) received/.exec(pingOut);
    const [tx, rx] = [Number(m?.[1]), Number(m?.[2])];
    console.log(
      `# churn: ${n} attach/detach cycles in ${SECONDS} s; steady ping ${rx}/${tx}; fds ${base.fds} -> ${now.fds}; RSS MB ${base.rss.map((x) => x.toFixed(0))} -> ${now.rss.map((x) => x.toFixed(0))}`,
    );
    assert.ok(n >= 5, `cycles: ${n}`);
    assert.ok(rx >= tx * 0.98, `steady traffic kept flowing through the churn: ${rx}/${tx}`);
    for (let i = 0; i < 2; i++) {
      assert.ok(now.fds[i] <= base.fds[i] + 2, `agent ${i} fds ${base.fds[i]} -> ${now.fds[i]}`);
      assert.deepEqual(now.stats[i].fdb, base.stats[i].fdb, `agent ${i} FDB back to baseline`);
      assert.equal(now.stats[i].endpoints.length, base.stats[i].endpoints.length);
      assert.ok(
        now.rss[i] < base.rss[i] + 40,
        `agent ${i} RSS ${base.rss[i].toFixed(0)} -> ${now.rss[i].toFixed(0)} MB`,
      );
    }
    assert.equal(now.kv, base.kv, 'KV endpoint + ipam keys back to baseline');
    const leftover = must(['ip', 'netns', 'list'])
      .split('\n')
      .filter((l) => new RegExp(`^${topo.tag}-s\\d`).test(l));
    assert.deepEqual(leftover, []);
  },
);
