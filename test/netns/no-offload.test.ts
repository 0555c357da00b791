/**
 * The slow path, forced with --no-offload, stays tested: two hosts, plain TAPs (no virtio-net header), one
 * frame per read; ping, byte-exact TCP both ways, and proof that no TSO/GSO happened.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { type Agent, isRoot, ping, seesNetwork, tcpTransfer, Topo, waitPing } from '../helpers/topo.js';

const skip = isRoot() ? false : 'needs root (network namespaces)';
let topo: Topo;
let a1: Agent;
let c1 = '';
let c2 = '';

before(async () => {
  if (skip) return;
  topo = new Topo();
  a1 = await topo.agent(topo.host('h1'), { extra: ['--no-offload'] });
  const a2 = await topo.agent(topo.host('h2'), { extra: ['--no-offload'] });
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

test('--no-offload: ping and byte-exact TCP both ways without any TSO/GSO', { skip }, async () => {
  assert.ok(await waitPing(c1, '198.19.1.3'));
  assert.equal(ping(c2, '198.19.1.2', 5).received, 5);
  const size = 16 * 1024 * 1024 + 5;
  for (const [from, to, addr] of [
    [c1, c2, '198.19.1.3'],
    [c2, c1, '198.19.1.2'],
  ]) {
    const t = await tcpTransfer(topo, from, to, addr, size);
    assert.equal(t.got.bytes, size);
    assert.equal(t.got.sha256, t.sent.sha256);
  }
  const st = await a1.call<{ offload: boolean; counters: Record<string, number> }>('GET', '/v1/stats');
  assert.equal(st.offload, false);
  assert.equal(st.counters.tx_gso_frames, 0);
  assert.equal(st.counters.tx_gso_sends, 0);
  assert.ok(st.counters.tx_packets > 1000);
});
