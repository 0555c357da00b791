/**
 * Crash consistency: an agent killed (SIGKILL) in the middle of attachments, a state file that is corrupt,
 * deleted or cannot be written, an embedded store file deleted under running agents. After each, the store, the
 * state file and the kernel must agree: no TAP without an endpoint, in any namespace; no endpoint without its TAP;
 * no claim in the store that no endpoint holds; and the endpoints that survive forward.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  rmdirSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { type Agent, isRoot, must, sleep, Topo, waitPing } from '../helpers/topo.js';

const skip = isRoot() ? false : 'needs root (network namespaces)';
let topo: Topo;
let host: { ns: string; addr: string; ifname: string };
let ag: Agent;
const NET = 'crash';

before(async () => {
  if (skip) return;
  topo = new Topo();
  host = topo.host('h1');
  ag = await topo.agent(host);
  await ag.call('POST', '/v1/networks', { name: NET, subnet: '198.19.40.0/24' });
});

after(async () => {
  if (topo) await topo.cleanup();
});

interface Link {
  ifname: string;
  ifalias?: string;
  linkinfo?: { info_kind?: string };
}

function tapsIn(ns: string): Link[] {
  const links = JSON.parse(must(['ip', '-j', '-d', '-n', ns, 'link', 'show'])) as Link[];
  return links.filter((l) => l.linkinfo?.info_kind === 'tun');
}

const statePath = () => join(topo.dir, 'state', `${host.ns}.json`);

async function restart(): Promise<void> {
  if (ag.proc.exitCode === null && ag.proc.signalCode === null) {
    process.kill(ag.proc.pid!, 'SIGKILL'); // `sh -c exec ip netns exec ... node`: the pid is the agent's
    await new Promise((r) => ag.proc.once('exit', r));
  }
  ag = await topo.agent(host);
}

/** The store's endpoint records of this host on NET (what every other host sees), by name. */
async function storeNames(): Promise<string[]> {
  const n = await ag.call<{ endpoints: { name: string; host: string }[] }>('GET', `/v1/networks/${NET}`);
  return n.endpoints
    .filter((e) => e.host === host.ns)
    .map((e) => e.name)
    .sort();
}

async function localNames(): Promise<string[]> {
  return (await ag.call<{ name: string }[]>('GET', '/v1/endpoints')).map((e) => e.name).sort();
}

/** Waits until the store lists exactly the local endpoints (the restarted agent gives up stale claims). */
async function storeAgrees(ms = 15_000): Promise<{ local: string[]; store: string[] }> {
  const end = Date.now() + ms;
  for (;;) {
    const local = await localNames();
    const store = await storeNames();
    if (local.join() === store.join() || Date.now() > end) return { local, store };
    await sleep(200);
  }
}

test(
  'SIGKILL during 40 concurrent attaches: afterwards no TAP without an endpoint anywhere, and the store agrees',
  { skip },
  async () => {
    const names = Array.from({ length: 40 }, (_, i) => `k${i}`);
    const spaces = new Map(names.map((n) => [n, topo.ns(n, { quiet: true })]));
    let done = 0;
    const calls = names.map((name) =>
      ag
        .call('POST', '/v1/endpoints', { network: NET, netns: spaces.get(name), name })
        .then(() => done++)
        .catch(() => {}),
    );
    // kill it with attachments finished, under way and not begun
    const t0 = Date.now();
    while (done < 8 && Date.now() - t0 < 30_000) await sleep(5);
    assert.ok(done >= 8 && done < names.length, `killed mid-way (${done} of ${names.length} done)`);
    await restart();
    await Promise.all(calls);
    const local = await localNames();
    assert.ok(local.length >= done, `every attach that answered survived (${local.length} >= ${done})`);
    for (const [name, ns] of spaces) {
      const taps = tapsIn(ns);
      if (local.includes(name)) assert.equal(taps.length, 1, `${name}: its TAP is there`);
      else
        assert.deepEqual(
          taps.map((l) => l.ifname),
          [],
          `${name}: no TAP left without an endpoint`,
        );
    }
    const strays = tapsIn(host.ns).filter((l) => l.ifalias?.startsWith('vxtap:'));
    assert.deepEqual(
      strays.map((l) => l.ifname),
      [],
      'no TAP of ours left in the agent namespace',
    );
    const st = JSON.parse(readFileSync(statePath(), 'utf8')) as { endpoints: { name: string }[]; intents: unknown[] };
    assert.deepEqual(st.endpoints.map((e) => e.name).sort(), local, 'the state file lists exactly the endpoints');
    assert.deepEqual(st.intents, [], 'no intent left');
    const agree = await storeAgrees();
    assert.deepEqual(agree.store, agree.local, 'the store lists exactly the endpoints');
    // an attach that was lost can be made again (no "already has an interface")
    const lost = names.find((n) => !local.includes(n));
    if (lost) await ag.call('POST', '/v1/endpoints', { network: NET, netns: spaces.get(lost), name: lost });
    // and they forward: two survivors reach each other
    const [a, b] = await ag.call<{ name: string; ip: string; netns: string }[]>('GET', '/v1/endpoints');
    assert.ok(await waitPing(a.netns, b.ip), `${a.name} -> ${b.name}`);
    for (const e of await localNames()) await ag.call('DELETE', `/v1/endpoints/${e}`);
  },
);

test(
  'soak: 30 SIGKILLs at random moments of attach/detach churn; after each restart nothing leaks; all forward',
  { skip },
  async () => {
    const names = Array.from({ length: 8 }, (_, i) => `z${i}`);
    const spaces = new Map(names.map((n) => [n, topo.ns(n, { quiet: true })]));
    let seed = 7;
    const rand = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2147483648), seed % n);
    for (let cycle = 0; cycle < 30; cycle++) {
      const local = new Set(await localNames());
      const ops: Promise<unknown>[] = [];
      for (let j = 0; j < 6; j++) {
        const name = names[rand(names.length)];
        ops.push(
          (local.has(name)
            ? ag.call('DELETE', `/v1/endpoints/${name}`)
            : ag.call('POST', '/v1/endpoints', { network: NET, netns: spaces.get(name), name })
          ).catch(() => {}),
        );
      }
      await sleep(rand(150)); // somewhere in the middle of them
      await restart();
      await Promise.all(ops);
      const now = await localNames();
      for (const [name, ns] of spaces) {
        const taps = tapsIn(ns).length;
        assert.equal(
          taps,
          now.includes(name) ? 1 : 0,
          `cycle ${cycle}: ${name} has ${taps} TAP(s), endpoint ${now.includes(name)}`,
        );
      }
      const strays = tapsIn(host.ns).filter((l) => l.ifalias?.startsWith('vxtap:'));
      assert.deepEqual(
        strays.map((l) => l.ifname),
        [],
        `cycle ${cycle}: no stray TAP in the agent namespace`,
      );
      const st = JSON.parse(readFileSync(statePath(), 'utf8')) as { endpoints: { name: string }[]; intents: unknown[] };
      assert.deepEqual(st.endpoints.map((e) => e.name).sort(), now, `cycle ${cycle}: the state file agrees`);
      assert.deepEqual(st.intents, [], `cycle ${cycle}: no intent left`);
    }
    const agree = await storeAgrees();
    assert.deepEqual(agree.store, agree.local, 'the store agrees');
    for (const name of names) {
      if (!agree.local.includes(name))
        await ag.call('POST', '/v1/endpoints', { network: NET, netns: spaces.get(name), name });
    }
    const eps = await ag.call<{ name: string; ip: string; netns: string }[]>('GET', '/v1/endpoints');
    for (const e of eps) {
      const peer = eps.find((x) => x !== e)!;
      assert.ok(await waitPing(e.netns, peer.ip), `${e.name} -> ${peer.name}`);
    }
    for (const e of eps) await ag.call('DELETE', `/v1/endpoints/${e.name}`);
  },
);

async function twoEndpoints(): Promise<{ ns1: string; ns2: string; ip2: string }> {
  const ns1 = topo.ns(`s1-${Date.now() % 100000}`, { quiet: true });
  const ns2 = topo.ns(`s2-${Date.now() % 100000}`, { quiet: true });
  await ag.call('POST', '/v1/endpoints', { network: NET, netns: ns1, name: 's1' });
  const e2 = await ag.call<{ ip: string }>('POST', '/v1/endpoints', { network: NET, netns: ns2, name: 's2' });
  assert.ok(await waitPing(ns1, e2.ip), 's1 -> s2 before');
  return { ns1, ns2, ip2: e2.ip };
}

for (const damage of ['truncated', 'deleted'] as const) {
  test(
    `a ${damage} state file: a loud warning, and the endpoints are rebuilt from their TAPs and the store`,
    { skip },
    async () => {
      const { ns1, ip2 } = await twoEndpoints();
      const p = statePath();
      if (damage === 'truncated') writeFileSync(p, readFileSync(p, 'utf8').slice(0, 40));
      else unlinkSync(p);
      await restart();
      const log = readFileSync(ag.logFile, 'utf8');
      if (damage === 'truncated') {
        assert.match(log, /STATE FILE UNREADABLE: moved aside/);
        assert.ok(
          readdirSync(join(topo.dir, 'state')).some((f) => f.startsWith(`${host.ns}.json.corrupt-`)),
          'the unreadable file is kept aside',
        );
      } else assert.match(log, /STATE FILE MISSING: rebuilt the local endpoints/);
      assert.deepEqual(await localNames(), ['s1', 's2'], 'both endpoints are local again');
      assert.ok(await waitPing(ns1, ip2), 's1 -> s2 after the restart');
      const st = JSON.parse(readFileSync(p, 'utf8')) as { endpoints: { name: string }[] };
      assert.deepEqual(st.endpoints.map((e) => e.name).sort(), ['s1', 's2'], 'a new state file lists them');
      await ag.call('DELETE', '/v1/endpoints/s1');
      await ag.call('DELETE', '/v1/endpoints/s2');
    },
  );
}

test(
  'a state file that cannot be written fails the attach, which leaves nothing behind; fixed, it works',
  { skip },
  async () => {
    const ns = topo.ns('unwritable', { quiet: true });
    const tmp = `${statePath()}.tmp`;
    mkdirSync(tmp); // the atomic write's temporary file cannot be created
    try {
      await assert.rejects(
        ag.call('POST', '/v1/endpoints', { network: NET, netns: ns, name: 'u1' }),
        (e: { code?: string; message?: string }) =>
          e.code === 'ERR_SETUP' && /cannot write the agent's state file/.test(e.message ?? ''),
      );
      assert.deepEqual(tapsIn(ns), [], 'no TAP in the namespace');
      assert.deepEqual(await localNames(), [], 'no endpoint');
      assert.deepEqual(await storeNames(), [], 'no claim in the store');
    } finally {
      rmdirSync(tmp);
    }
    await ag.call('POST', '/v1/endpoints', { network: NET, netns: ns, name: 'u1' });
    assert.equal(tapsIn(ns).length, 1);
    await ag.call('DELETE', '/v1/endpoints/u1');
  },
);

test(
  'the embedded store file deleted under running agents: each stops with a clear error instead of splitting',
  { skip },
  async () => {
    const h2 = topo.host('h2');
    const ag2 = await topo.agent(h2);
    const store = join(topo.dir, 'store.db');
    assert.ok(existsSync(store));
    for (const f of [store, `${store}-wal`, `${store}-shm`]) rmSync(f, { force: true });
    const exited = (a: Agent) =>
      a.proc.exitCode !== null
        ? Promise.resolve(a.proc.exitCode)
        : new Promise<number | null>((r) => a.proc.once('exit', r));
    const codes = await Promise.race([Promise.all([exited(ag), exited(ag2)]), sleep(10_000).then(() => null)]);
    assert.deepEqual(codes, [1, 1], 'both agents exited with an error');
    for (const a of [ag, ag2])
      assert.match(readFileSync(a.logFile, 'utf8'), /the embedded store .*store\.db was deleted while in use/);
  },
);
