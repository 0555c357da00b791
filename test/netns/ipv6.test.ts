/**
 * Dual-stack overlay networks across two hosts (issue 25): an IPv6 subnet beside the IPv4 one, IPv6 addresses
 * claimed in the store, neighbour discovery answered by the agent, IPv6 sources checked, AAAA from the name server.
 *   h1, h2 on the underlay; both agents with --pool6 2001:db8:100::/48
 *   six (198.19.6.0/24 + 2001:db8:6::/64): c1 (h1, .10), c2 (h2, .20)
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { type Agent, isRoot, must, seesNetwork, sh, tcpTransfer, Topo } from '../helpers/topo.js';
import { poll } from '../helpers/wait.js';

const skip = isRoot() ? false : 'needs root (network namespaces)';
let topo: Topo;
const ag: Record<string, Agent> = {};
const ns: Record<string, string> = {};
const hosts: Record<string, { ns: string; addr: string }> = {};
const ep: Record<string, { ip: string; ip6?: string; mac: string }> = {};
const stats = async (a: Agent) => (await a.call<{ counters: Record<string, number> }>('GET', '/v1/stats')).counters;
const ping6 = (from: string, to: string, count = 3, extra: string[] = []) => {
  const r = sh(
    ['ip', 'netns', 'exec', from, 'ping', '-6', '-n', '-q', '-c', String(count), '-i', '0.2', '-W', '1', ...extra, to],
    30_000,
  );
  return Number(/(\d+) received/.exec(r.stdout)?.[1] ?? 0);
};

before(async () => {
  if (skip) return;
  topo = new Topo();
  const h1 = (hosts.h1 = topo.host('h1'));
  const h2 = (hosts.h2 = topo.host('h2'));
  ag.h1 = await topo.agent(h1, {
    extra: ['--pool6', '2001:db8:100::/48', '--dns', `${h1.addr}:5353`, '--dns-upstream', 'none'],
  });
  ag.h2 = await topo.agent(h2, { extra: ['--pool6', '2001:db8:100::/48'] });
  await ag.h1.call('POST', '/v1/networks', { name: 'six', subnet: '198.19.6.0/24', subnet6: '2001:db8:6::/64' });
  for (const h of ['h1', 'h2']) await seesNetwork(ag[h], 'six');
  for (const [h, name, ip] of [
    ['h1', 'c1', '198.19.6.10'],
    ['h2', 'c2', '198.19.6.20'],
  ]) {
    ns[name] = topo.ns(name);
    ep[name] = await ag[h].call('POST', '/v1/endpoints', { network: 'six', netns: ns[name], name, ip });
  }
});

after(async () => {
  if (topo) await topo.cleanup();
});

test(
  'a dual-stack network: IPv6 subnet and gateway in the store, each endpoint an IPv6 address that goes with its IPv4 one',
  { skip },
  async () => {
    const n = await ag.h2.call<Record<string, unknown>>('GET', '/v1/networks/six');
    assert.equal(n.subnet6, '2001:db8:6::/64');
    assert.equal(n.gateway6, '2001:db8:6::1');
    assert.equal(ep.c1.ip6, '2001:db8:6::a');
    assert.equal(ep.c2.ip6, '2001:db8:6::14');
    assert.match(must(['ip', '-n', ns.c1, '-6', 'addr', 'show', 'dev', 'eth0']), /inet6 2001:db8:6::a\/64/);
    assert.match(must(['ip', '-n', ns.c1, '-6', 'route', 'show', 'default']), /default via 2001:db8:6::1 dev eth0/);
    const eps = n.endpoints as { name: string; ip6?: string }[];
    assert.deepEqual(eps.map((e) => `${e.name} ${e.ip6}`).sort(), ['c1 2001:db8:6::a', 'c2 2001:db8:6::14']);
  },
);

test(
  'IPv6 across hosts: ping both ways, neighbour discovery answered by the agent, TCP byte-exact',
  { skip },
  async () => {
    const first = await poll(
      () => ping6(ns.c2, ep.c1.ip6!, 1),
      (n) => n === 1,
      10_000,
      100,
    );
    assert.ok(first.ok, 'first ping -6 c2 -> c1');
    assert.equal(ping6(ns.c2, ep.c1.ip6!, 5), 5, 'c2 -> c1');
    assert.equal(ping6(ns.c1, ep.c2.ip6!, 5), 5, 'c1 -> c2');
    // c2's kernel resolved c1's address to c1's MAC, and the answer came from h2's agent
    assert.match(must(['ip', '-n', ns.c2, '-6', 'neigh', 'show', ep.c1.ip6!]), new RegExp(`lladdr ${ep.c1.mac}`));
    assert.ok((await stats(ag.h2)).nd_suppressed >= 1, 'h2 answered the neighbour solicitation itself');
    assert.ok((await stats(ag.h1)).nd_suppressed >= 1, 'and h1 for c1');
    const r = await tcpTransfer(topo, ns.c1, ns.c2, ep.c2.ip6!, 8 * 1024 * 1024);
    assert.equal(r.got.bytes, 8 * 1024 * 1024);
    assert.equal(r.got.sha256, r.sent.sha256, 'byte-exact over IPv6');
  },
);

test("an IPv6 source that is not the endpoint's own is dropped and counted", { skip }, async () => {
  // c2 gives itself a second address in the subnet and tries to use it
  must(['ip', '-n', ns.c2, '-6', 'addr', 'add', '2001:db8:6::99/64', 'dev', 'eth0', 'nodad']);
  try {
    const before = (await stats(ag.h2)).tx_spoofed_src_ip6;
    assert.equal(ping6(ns.c2, ep.c1.ip6!, 3, ['-I', '2001:db8:6::99']), 0, 'no reply to a spoofed source');
    const after = (await stats(ag.h2)).tx_spoofed_src_ip6;
    assert.ok(after - before >= 3, `tx_spoofed_src_ip6 ${before} -> ${after}`);
  } finally {
    sh(['ip', '-n', ns.c2, '-6', 'addr', 'del', '2001:db8:6::99/64', 'dev', 'eth0']);
  }
  assert.equal(ping6(ns.c2, ep.c1.ip6!, 2), 2, 'its own address still works');
});

test('--ip6: a fixed IPv6 address is claimed cluster-wide; bad ones get clear errors', { skip }, async () => {
  const n3 = topo.ns('c3');
  const c3 = await ag.h2.call<{ ip6: string }>('POST', '/v1/endpoints', {
    network: 'six',
    netns: n3,
    name: 'c3',
    ip6: '2001:db8:6:0::77',
  });
  assert.equal(c3.ip6, '2001:db8:6::77', 'stored in canonical form');
  assert.equal(ping6(n3, ep.c1.ip6!, 2), 2);
  const n4 = topo.ns('c4');
  const tryAttach = (body: Record<string, unknown>) =>
    ag.h1.call('POST', '/v1/endpoints', { network: 'six', netns: n4, name: 'c4', ...body }).then(
      () => 'attached',
      (e: Error) => e.message,
    );
  assert.match(
    await tryAttach({ ip6: '2001:db8:6::77' }),
    /IPv6 address 2001:db8:6::77 is already in use on six \(by \S*h2\/c3\)/,
  );
  assert.match(await tryAttach({ ip6: '2001:db8:7::1' }), /not a host address of six \(2001:db8:6::\/64\)/);
  assert.match(await tryAttach({ ip6: '2001:db8:6::1' }), /is the gateway of six/);
  assert.match(await tryAttach({ ip6: 'nonsense' }), /not an IPv6 address/);
  await ag.h1.call('POST', '/v1/networks', { name: 'four', subnet: '198.19.7.0/24' });
  await seesNetwork(ag.h1, 'four');
  const v4only = await ag.h1
    .call('POST', '/v1/endpoints', { network: 'four', netns: n4, name: 'c4', ip6: '2001:db8:6::78' })
    .then(
      () => 'attached',
      (e: Error) => e.message,
    );
  assert.match(v4only, /network four has no IPv6 subnet/);
  // nothing of the refused attaches is left in the store or the namespace
  assert.doesNotMatch(must(['ip', '-n', n4, 'link', 'show']), /eth0/);
  await ag.h2.call('DELETE', '/v1/endpoints/c3');
  await ag.h1.call('DELETE', '/v1/networks/four');
});

test('--ipv6 without an IPv6 subnet: each network takes the next /64 of --pool6', { skip }, async () => {
  const a = await ag.h1.call<{ subnet6: string; gateway6: string }>('POST', '/v1/networks', {
    name: 'auto1',
    ipv6: true,
  });
  const b = await ag.h2.call<{ subnet6: string }>('POST', '/v1/networks', { name: 'auto2', ipv6: true });
  assert.equal(a.subnet6, '2001:db8:100::/64');
  assert.equal(a.gateway6, '2001:db8:100::1');
  assert.equal(b.subnet6, '2001:db8:100:1::/64');
  const clash = await ag.h1.call('POST', '/v1/networks', { name: 'auto3', subnet6: '2001:db8:100:1::/64' }).then(
    () => 'created',
    (e: Error) => e.message,
  );
  assert.match(clash, /overlaps 2001:db8:100:1::\/64 of network auto2/);
  const small = await ag.h1
    .call('POST', '/v1/networks', { name: 'auto4', subnet: '198.19.64.0/18', subnet6: '2001:db8:8::/120' })
    .then(
      () => 'created',
      (e: Error) => e.message,
    );
  assert.match(small, /2001:db8:8::\/120 is smaller than IPv4 subnet 198\.19\.64\.0\/18: .* use a \/114 or shorter/);
  await ag.h1.call('DELETE', '/v1/networks/auto1');
  await ag.h2.call('DELETE', '/v1/networks/auto2');
});

test('the name server answers AAAA with the IPv6 address, A with the IPv4 one', { skip }, () => {
  // the name server runs in h1's namespace: ask from there, with dns-packet as the agent's own tests do
  const q = (type: string) =>
    sh(
      [
        'ip',
        'netns',
        'exec',
        hosts.h1.ns,
        'node',
        '-e',
        `const d = require('node:dgram'), p = require('dns-packet'), s = d.createSocket('udp4');
         s.on('message', (m) => { console.log(JSON.stringify(p.decode(m).answers.map((a) => a.data))); process.exit(0); });
         setTimeout(() => process.exit(2), 3000);
         s.send(p.encode({ type: 'query', id: 7, questions: [{ type: '${type}', name: 'c2.six' }] }), 5353, '${hosts.h1.addr}');`,
      ],
      10_000,
    ).stdout;
  assert.deepEqual(JSON.parse(q('AAAA')), ['2001:db8:6::14']);
  assert.deepEqual(JSON.parse(q('A')), ['198.19.6.20']);
});
