/**
 * Docker's multi-host overlay workflow, end to end, with two REAL dockerd daemons (one per test host namespace,
 * each with its own vxtap agent as network + IPAM plugin and DNS resolver), on one real etcd. No swarm, no
 * cluster-store flags: the steps of issue 4, in order, on containers of a busybox image built with `docker import`.
 *
 * Every Docker object and namespace carries the run's tag; dockerd address pools are inside 198.18.0.0/15 and
 * overlay subnets inside 198.19.0.0/16; everything is removed at the end, also when a step fails.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { startEtcd, type EtcdServer } from '../helpers/etcd.js';
import { haveDockerd, importBusybox, killDockerd, launchDockerd, startDockerd, startPluginAgent, type Dockerd } from '../helpers/docker.js';
import { type Agent, CLI, isRoot, must, sh, sleep, Topo } from '../helpers/topo.js';

const skip = !isRoot() ? 'needs root (network namespaces, dockerd)' : !haveDockerd() ? 'needs dockerd (apt install docker.io; .ci/run does)' : false;
let topo: Topo;
let etcd: EtcdServer;
const H: Record<string, { ns: string; addr: string; ifname: string }> = {};
const D: Record<string, Dockerd> = {};
const A: Record<string, Agent> = {};
let T = '';
let IMG = '';
const NET = () => `${T}-app`;
const NET2 = () => `${T}-db`;

async function until(f: () => boolean | Promise<boolean>, ms: number, step = 100): Promise<number> {
  const t0 = Date.now();
  while (!(await f())) {
    if (Date.now() - t0 > ms) return -1;
    await sleep(step);
  }
  return Date.now() - t0;
}

/** Runs a one-shot container and returns its output and exit code. */
function run(d: Dockerd, net: string, cmd: string, extra: string[] = []): { code: number; out: string } {
  const r = d.docker(['run', '--rm', '--net', net, ...extra, IMG, 'sh', '-c', cmd], 90_000);
  return { code: r.code, out: r.stdout + r.stderr };
}

function exec(d: Dockerd, name: string, cmd: string): { code: number; out: string } {
  const r = d.docker(['exec', name, 'sh', '-c', cmd], 60_000);
  return { code: r.code, out: r.stdout + r.stderr };
}

/** The store's keys under a prefix, read from inside host 1's namespace (etcd lives on the test underlay). */
const keysUnder = (prefix: string): { key: string; value: string }[] =>
  JSON.parse(must(['ip', 'netns', 'exec', H.h1.ns, 'node', join(CLI, '../../../test/helpers/kvdump.js'), `etcd://${etcd.endpoint}`, prefix]));
const netNames = (d: Dockerd) => d.must(['network', 'ls', '--format', '{{.Name}}']).split('\n').filter(Boolean);
const ipOf = (d: Dockerd, c: string, net: string) => d.must(['inspect', '-f', `{{(index .NetworkSettings.Networks "${net}").IPAddress}}`, c]).trim();

before(async () => {
  if (skip) return;
  topo = new Topo();
  T = topo.tag;
  IMG = `${T}-bb`;
  etcd = await startEtcd(topo.service());
  H.h1 = topo.host('h1');
  H.h2 = topo.host('h2');
  D.h1 = await startDockerd(topo, H.h1.ns, { pool: '198.18.64.0/18', dns: [H.h1.addr] });
  D.h2 = await startDockerd(topo, H.h2.ns, { pool: '198.18.128.0/18', dns: [H.h2.addr] });
  for (const h of ['h1', 'h2']) {
    A[h] = await startPluginAgent(topo, D[h], H[h], `etcd://${etcd.endpoint}`);
    importBusybox(topo, D[h], IMG);
  }
});

after(async () => {
  if (topo) await topo.cleanup();
  if (etcd) await etcd.stop();
});

test('1. a network created with docker on host 1 appears in docker on host 2', { skip, timeout: 120_000 }, async () => {
  D.h1.must(['network', 'create', '-d', 'vxtap', '--ipam-driver', 'vxtap', '--subnet', '198.19.1.0/24', NET()]);
  const ms = await until(() => netNames(D.h2).includes(NET()), 20_000);
  assert.ok(ms >= 0, `${NET()} did not appear on host 2: ${netNames(D.h2).join(', ')}`);
  console.log(`# docker network create on h1 -> visible in docker network ls on h2 after ${ms} ms`);
  const nets = keysUnder('/vxtap/v1/networks/');
  assert.ok(nets.some((n) => n.key === NET()), 'the vxtap network is in the store');
});

const WEB = () => `${T}-web`;
const CLIENT = () => `${T}-client`;
const httpd = (page: string) => `echo ${page} > /www/index.html && exec httpd -f -p 80 -h /www`;

test('2. a container on host 2 reaches host 1\'s container by IP, by name and name.network, and fetches its page', { skip, timeout: 180_000 }, async () => {
  D.h1.must(['run', '-d', '--net', NET(), '--name', WEB(), IMG, 'sh', '-c', httpd(`hello-from-${T}`)]);
  D.h2.must(['run', '-d', '--net', NET(), '--name', CLIENT(), IMG, 'sleep', '3600']);
  const webIp = ipOf(D.h1, WEB(), NET());
  assert.match(webIp, /^198\.19\.1\.\d+$/);
  let r = exec(D.h2, CLIENT(), `ping -c 3 -W 2 ${webIp}`);
  assert.equal(r.code, 0, `ping by IP: ${r.out}`);
  // the name becomes resolvable once host 1's plugin read it from dockerd and published it
  const ms = await until(() => exec(D.h2, CLIENT(), `ping -c 1 -W 2 ${WEB()}`).code === 0, 20_000, 300);
  assert.ok(ms >= 0, `ping ${WEB()} by name failed: ${exec(D.h2, CLIENT(), `ping -c 1 -W 2 ${WEB()}`).out}`);
  r = exec(D.h2, CLIENT(), `ping -c 2 -W 2 ${WEB()}.${NET()}`);
  assert.equal(r.code, 0, `ping name.network: ${r.out}`);
  r = exec(D.h2, CLIENT(), `timeout 10 wget -q -O- http://${WEB()}`);
  assert.equal(r.code, 0, r.out);
  assert.match(r.out, new RegExp(`hello-from-${T}`));
  // and a one-shot `docker run` (a fresh container, the tutorial's way)
  const once = run(D.h2, NET(), `ping -c 2 -W 2 ${WEB()}`);
  assert.equal(once.code, 0, once.out);
});

test('3. docker network inspect lists local containers with their IPs; IPs never collide across hosts', { skip, timeout: 180_000 }, async () => {
  const inspect = (d: Dockerd) =>
    JSON.parse(d.must(['network', 'inspect', NET()]))[0].Containers as Record<string, { Name: string; IPv4Address: string }>;
  const c1 = Object.values(inspect(D.h1));
  assert.deepEqual(c1.map((c) => c.Name), [WEB()]);
  assert.equal(c1[0].IPv4Address.replace(/\/\d+$/, ''), ipOf(D.h1, WEB(), NET()));
  // several containers on both hosts, started concurrently: all addresses distinct, all in the store
  const names: string[] = [];
  for (let i = 0; i < 3; i++) for (const h of ['h1', 'h2']) names.push(`${T}-n${h}${i}`);
  await Promise.all(
    names.map(async (n) => {
      const d = n.includes('nh1') ? D.h1 : D.h2;
      const r = d.docker(['run', '-d', '--net', NET(), '--name', n, IMG, 'sleep', '3600'], 90_000);
      assert.equal(r.code, 0, r.stderr);
    }),
  );
  const ips = [...Object.values(inspect(D.h1)), ...Object.values(inspect(D.h2))].map((c) => c.IPv4Address);
  assert.equal(ips.length, 8);
  assert.equal(new Set(ips).size, ips.length, `duplicate addresses: ${ips.join(' ')}`);
  const claims = keysUnder(`/vxtap/v1/ipam/${NET()}/`);
  for (const ip of ips) assert.ok(claims.some((c) => c.key === ip.replace(/\/\d+$/, '')), `${ip} is claimed in the store`);
  for (const n of names) (n.includes('nh1') ? D.h1 : D.h2).must(['rm', '-f', n]);
});

const OTHER = () => `${T}-other`;

test('4. network connect/disconnect; two vxtap networks are isolated unless a container is on both', { skip, timeout: 180_000 }, async () => {
  D.h2.must(['network', 'create', '-d', 'vxtap', '--ipam-driver', 'vxtap', '--subnet', '198.19.2.0/24', NET2()]);
  assert.ok((await until(() => netNames(D.h1).includes(NET2()), 20_000)) >= 0, `${NET2()} did not appear on host 1`);
  D.h1.must(['run', '-d', '--net', NET2(), '--name', OTHER(), IMG, 'sleep', '3600']);
  const otherIp = ipOf(D.h1, OTHER(), NET2());
  const webIp = ipOf(D.h1, WEB(), NET());
  assert.notEqual(exec(D.h2, CLIENT(), `ping -c 2 -W 1 ${otherIp}`).code, 0, 'client (app only) must not reach other (db only)');
  assert.notEqual(exec(D.h1, OTHER(), `ping -c 2 -W 1 ${webIp}`).code, 0, 'other (db only) must not reach web (app only)');
  D.h2.must(['network', 'connect', NET2(), CLIENT()]);
  let r = exec(D.h2, CLIENT(), `ping -c 2 -W 2 ${otherIp}`);
  assert.equal(r.code, 0, `after connect: ${r.out}`);
  assert.match(exec(D.h2, CLIENT(), 'ip -o addr').out, /198\.19\.2\./);
  D.h2.must(['network', 'disconnect', NET2(), CLIENT()]);
  assert.notEqual(exec(D.h2, CLIENT(), `ping -c 2 -W 1 ${otherIp}`).code, 0, 'after disconnect the db network is unreachable again');
  r = exec(D.h2, CLIENT(), `ping -c 1 -W 2 ${webIp}`);
  assert.equal(r.code, 0, `app still works after disconnect from db: ${r.out}`);
});

test('5. -p publishes a port on the host; containers reach addresses outside the overlay', { skip, timeout: 180_000 }, async () => {
  const pub = `${T}-pub`;
  D.h1.must(['run', '-d', '-p', '8080:80', '--net', NET(), '--name', pub, IMG, 'sh', '-c', httpd(`published-${T}`)]);
  const svc = topo.service();
  // from outside the overlay: the underlay switch namespace, to host 1's address
  const ms = await until(() => sh(['ip', 'netns', 'exec', svc.netns, 'busybox', 'timeout', '5', 'busybox', 'wget', '-q', '-O-', `http://${H.h1.addr}:8080/`]).stdout.includes(`published-${T}`), 15_000, 300);
  assert.ok(ms >= 0, `port 8080 on ${H.h1.addr} did not serve the container's page`);
  const r = exec(D.h2, CLIENT(), `ping -c 2 -W 2 ${svc.addr}`);
  assert.equal(r.code, 0, `client reaches ${svc.addr} (outside the overlay): ${r.out}`);
  D.h1.must(['rm', '-f', pub]);
});
