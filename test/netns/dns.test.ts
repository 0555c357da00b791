/**
 * The cluster name server on a real host (issue 27): it answers this host and its containers, and refuses another
 * machine of the underlay, which must learn no container name and cannot use it as an open resolver.
 *   h1 (agent with --dns on its VTEP address), h2 (another underlay host, no agent); c1 on h1
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { type Agent, isRoot, seesNetwork, sh, Topo } from '../helpers/topo.js';

const skip = isRoot() ? false : 'needs root (network namespaces)';
let topo: Topo;
let agent: Agent;
const hosts: Record<string, { ns: string; addr: string }> = {};

/** One DNS query from inside `ns` to h1's name server, with dns-packet as the agent's own tests use it: the rcode
 * and the answers' data. */
function ask(ns: string, name: string): { rcode: string; answers: string[] } {
  const r = sh(
    [
      'ip',
      'netns',
      'exec',
      ns,
      'node',
      '-e',
      `const d = require('node:dgram'), p = require('dns-packet'), s = d.createSocket('udp4');
       s.on('message', (m) => { const a = p.decode(m); console.log(JSON.stringify({ rcode: a.rcode, answers: a.answers.map((x) => x.data) })); process.exit(0); });
       setTimeout(() => { console.log(JSON.stringify({ rcode: 'TIMEOUT', answers: [] })); process.exit(0); }, 3000);
       s.send(p.encode({ type: 'query', id: 9, flags: p.RECURSION_DESIRED, questions: [{ type: 'A', name: '${name}' }] }), 53, '${hosts.h1.addr}');`,
    ],
    10_000,
  );
  return JSON.parse(r.stdout) as { rcode: string; answers: string[] };
}

before(async () => {
  if (skip) return;
  topo = new Topo();
  hosts.h1 = topo.host('h1');
  hosts.h2 = topo.host('h2');
  agent = await topo.agent(hosts.h1, { extra: ['--dns', hosts.h1.addr, '--dns-upstream', 'none'] });
  await agent.call('POST', '/v1/networks', { name: 'names', subnet: '198.19.21.0/24' });
  await seesNetwork(agent, 'names');
  await agent.call('POST', '/v1/endpoints', { network: 'names', netns: topo.ns('c1', { quiet: true }), name: 'c1' });
});

after(async () => {
  if (topo) await topo.cleanup();
});

test('the name server answers this host itself', { skip }, () => {
  const r = ask(hosts.h1.ns, 'c1.names');
  assert.equal(r.rcode, 'NOERROR');
  assert.deepEqual(r.answers, ['198.19.21.2']);
});

test(
  'another underlay host is refused: no container name, and no forwarding (not an open resolver)',
  { skip },
  async () => {
    const ours = ask(hosts.h2.ns, 'c1.names');
    assert.equal(ours.rcode, 'REFUSED');
    assert.deepEqual(ours.answers, []);
    const foreign = ask(hosts.h2.ns, 'example.com');
    assert.equal(foreign.rcode, 'REFUSED');
    const st = await agent.call<{ dns: Record<string, number> }>('GET', '/v1/stats');
    assert.equal(st.dns.refused, 2);
    assert.equal(st.dns.forwarded, 0);
  },
);
