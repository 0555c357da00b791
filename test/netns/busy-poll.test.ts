/**
 * --busy-poll: two hosts whose agents stay awake for a window after each packet. Asserts that forwarding works
 * with it (ping, byte-exact TCP), that the polling really caught packets (the agent's busy_poll.hits counter),
 * and that it ends when traffic ends: an agent with a 50 ms window uses next to no CPU once the overlay is idle.
 * No latency figure is asserted: `npm run bench` reports it (vxtap-busy row) against kernel VXLAN.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { type Agent, CLI, isRoot, ping, seesNetwork, sh, sleep, tcpTransfer, Topo, waitPing } from '../helpers/topo.js';

const skip = isRoot() ? false : 'needs root (network namespaces)';
let topo: Topo;
let a1: Agent;
let a2: Agent;
let h1: { ns: string; addr: string };
let c1 = '';
let c2 = '';

interface BusyStats {
  busy_poll?: { window_us: number; hits: number; spin_seconds: number };
}

/** CPU seconds (user + system) a process has used, from /proc. */
function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

before(async () => {
  if (skip) return;
  topo = new Topo();
  h1 = topo.host('h1');
  a1 = await topo.agent(h1, { extra: ['--busy-poll', '50000', '--metrics', '127.0.0.1:9410'] });
  a2 = await topo.agent(topo.host('h2'), { extra: ['--busy-poll', '50000'] });
  await a1.call('POST', '/v1/networks', { name: 'blue', subnet: '198.19.1.0/24' });
  await seesNetwork(a2, 'blue');
  c1 = topo.ns('c1', { quiet: true });
  c2 = topo.ns('c2', { quiet: true });
  await a1.call('POST', '/v1/endpoints', { network: 'blue', netns: c1, name: 'c1', ip: '198.19.1.2' });
  await a2.call('POST', '/v1/endpoints', { network: 'blue', netns: c2, name: 'c2', ip: '198.19.1.3' });
});

after(async () => {
  if (topo) await topo.cleanup();
});

test(
  '--busy-poll: forwards, catches packets while polling, and stops polling when traffic stops',
  { skip },
  async () => {
    assert.ok(await waitPing(c2, '198.19.1.2'));
    const before1 = (await a1.call<BusyStats>('GET', '/v1/stats')).busy_poll;
    assert.ok(before1, 'stats report busy_poll when it is on');
    assert.equal(before1.window_us, 50000);
    // pings 10 ms apart: each arrives inside the 50 ms window of the previous one
    assert.equal(ping(c2, '198.19.1.2', 50, 0.01).received, 50);
    const t = await tcpTransfer(topo, c1, c2, '198.19.1.3', 8 * 1024 * 1024 + 3);
    assert.equal(t.got.sha256, t.sent.sha256);
    const after1 = (await a1.call<BusyStats>('GET', '/v1/stats')).busy_poll!;
    // the answering agent was polling when echo requests arrived (50 of them, 10 ms apart in a 50 ms window, and
    // the TCP transfer's segments): a loaded machine may cost some hits, a poll that never catches one fails
    assert.ok(after1.hits - before1.hits >= 10, `hits ${before1.hits} -> ${after1.hits}`);
    assert.ok(after1.spin_seconds > before1.spin_seconds, 'time spent polling is counted');
    const m = sh([
      'ip',
      'netns',
      'exec',
      h1.ns,
      'node',
      '-e',
      'fetch("http://127.0.0.1:9410/metrics").then(r=>r.text()).then(t=>process.stdout.write(t))',
    ]).stdout;
    const hits = Number(/^vxtap_busy_poll_hits_total\{[^}]*\} (\d+)/m.exec(m)?.[1]);
    assert.ok(hits >= after1.hits, `metrics: vxtap_busy_poll_hits_total ${hits}`);
    assert.match(m, /^vxtap_busy_poll_seconds_total\{/m);
    // idle: after the window the agents sleep again (a poll that never ended would use ~1 CPU s per s). CPU time
    // is a resource bound, not a clock one: a slow or loaded machine gives the agents less CPU, never more.
    await sleep(500);
    const pids = [a1.proc.pid!, a2.proc.pid!];
    const cpu0 = pids.map(cpuSeconds);
    await sleep(2000);
    const used = pids.map((p, i) => cpuSeconds(p) - cpu0[i]);
    for (const u of used) assert.ok(u < 0.3, `idle agents used ${used.join(' / ')} CPU s in 2 s`);
  },
);

test('--busy-poll with a bad value is refused with a message', { skip }, async () => {
  const bad = sh([
    'node',
    '--no-memory-reducer',
    CLI,
    'agent',
    '--vtep',
    '198.18.0.1',
    '--busy-poll=-5',
    '--kv',
    `${topo.dir}/x.db`,
    '--socket',
    `${topo.dir}/x.sock`,
    '--state-dir',
    topo.dir,
  ]);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /busy-poll window -5: 0 \(off\) to 10000000 microseconds/);
});
