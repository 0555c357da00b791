/**
 * VXLAN over an IPv6 underlay (RFC 7348 section 5, issue 25): vxtap to vxtap, and vxtap to the kernel's VXLAN
 * device, both ways, offloads at their defaults.
 *   h1, h2: vxtap agents with --vtep 2001:db8:18::1 / ::2, on etcd over IPv6 too (etcd://[2001:db8:18::250]:2379)
 *   h3:     the kernel: vx0 (type vxlan id 4099 local 2001:db8:18::3) in bridge br0, container c3 on a veth;
 *           flood entry to h1 (`bridge fdb append 00:00:00:00:00:00 dev vx0 dst 2001:db8:18::1`), and h1 has h3 on
 *           its flood list (`vxtap fdb add blue 00:00:00:00:00:00 2001:db8:18::3`)
 *   blue (198.19.9.0/24, VNI 4099, MTU left to the agent: 1430, 1500 minus 70 bytes of outer IPv6/UDP/VXLAN):
 *           c1 (h1, .10), c2 (h2, .20), c3 (kernel, .30)
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startCapture } from '../helpers/capture.js';
import { type EtcdServer, startEtcd } from '../helpers/etcd.js';
import {
  type Agent,
  CLI,
  isRoot,
  must,
  ping,
  seesNetwork,
  sh,
  tcpTransfer,
  Topo,
  until,
  waitPing,
} from '../helpers/topo.js';

const skip = isRoot() ? false : 'needs root (network namespaces)';
let topo: Topo;
let etcd: EtcdServer;
const ag: Record<string, Agent> = {};
const h: Record<string, { ns: string; addr: string; addr6: string; ifname: string }> = {};
const c: Record<string, string> = {};
const mac: Record<string, string> = {};
const stats = async (a: Agent) =>
  await a.call<{ vtep: string; counters: Record<string, number>; peers: { vtep: string; rx_packets: number }[] }>(
    'GET',
    '/v1/stats',
  );

/** 8 MB (and an odd few bytes) each way between two containers [netns, address], byte-exact. */
async function tcpBothWays(a: [string, string], b: [string, string]): Promise<void> {
  const size = 8 * 1024 * 1024 + 7;
  for (const [[from], [to, addr]] of [
    [a, b],
    [b, a],
  ]) {
    const t = await tcpTransfer(topo, from, to, addr, size);
    assert.equal(t.got.bytes, size);
    assert.equal(t.got.sha256, t.sent.sha256, `TCP ${from} -> ${to} content intact`);
  }
}

before(async () => {
  if (skip) return;
  topo = new Topo();
  for (const n of ['h1', 'h2', 'h3']) h[n] = topo.host(n, { ipv6: true });
  for (const n of ['c1', 'c2', 'c3']) c[n] = topo.ns(n, { quiet: true });
  etcd = await startEtcd(topo.service({ ipv6: true }));
  for (const n of ['h1', 'h2'])
    ag[n] = await topo.agent({ ns: h[n].ns, addr: h[n].addr6 }, { kv: `etcd://${etcd.endpoint}` });
  await ag.h1.call('POST', '/v1/networks', { name: 'blue', vni: 4099, subnet: '198.19.9.0/24' });
  await seesNetwork(ag.h2, 'blue');
  for (const [a, n, ip] of [
    ['h1', 'c1', '198.19.9.10'],
    ['h2', 'c2', '198.19.9.20'],
  ]) {
    mac[n] = (
      await ag[a].call<{ mac: string }>('POST', '/v1/endpoints', { network: 'blue', netns: c[n], name: n, ip })
    ).mac;
  }
  // the kernel VTEP on h3
  const k = (args: string[]) => must(['ip', '-n', h.h3.ns, ...args]);
  k(['link', 'add', 'vx0', 'type', 'vxlan', 'id', '4099', 'dstport', '4789', 'local', h.h3.addr6, 'dev', h.h3.ifname]);
  k(['link', 'add', 'br0', 'type', 'bridge']);
  k(['link', 'set', 'vx0', 'master', 'br0', 'up']);
  k(['link', 'add', 'k3', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', c.c3]);
  k(['link', 'set', 'k3', 'master', 'br0', 'mtu', '1430', 'up']);
  k(['link', 'set', 'br0', 'up']);
  must(['bridge', '-n', h.h3.ns, 'fdb', 'append', '00:00:00:00:00:00', 'dev', 'vx0', 'dst', h.h1.addr6]);
  must(['ip', '-n', c.c3, 'link', 'set', 'eth0', 'mtu', '1430', 'up']);
  must(['ip', '-n', c.c3, 'addr', 'add', '198.19.9.30/24', 'dev', 'eth0']);
  mac.c3 = JSON.parse(must(['ip', '-n', c.c3, '-j', 'link', 'show', 'eth0']))[0].address;
  await ag.h1.call('POST', '/v1/fdb', { network: 'blue', mac: '00:00:00:00:00:00', dst: h.h3.addr6 });
});

after(async () => {
  if (etcd) await etcd.stop();
  if (topo) await topo.cleanup();
});

test('an agent on an IPv6 underlay: its VTEP in the store, MTU 1430 by default, peers by IPv6', { skip }, async () => {
  const st = await stats(ag.h1);
  assert.equal(st.vtep, `[${h.h1.addr6}]:4789`);
  const net = await ag.h2.call<{ mtu: number }>('GET', '/v1/networks/blue');
  assert.equal(net.mtu, 1430, '1500 - 70 (outer IPv6 40 + UDP 8 + VXLAN 8 + inner Ethernet 14)');
  assert.match(must(['ip', '-n', c.c1, 'link', 'show', 'eth0']), /mtu 1430/);
  // c2 is a kv entry behind h2's IPv6 VTEP, and h2 is on the flood list, from the host record h2 wrote
  const fdb = await ag.h1.call<{ mac: string; kind: string; dst: string }[]>('GET', '/v1/fdb?network=blue');
  assert.ok(
    fdb.some((r) => r.mac === mac.c2 && r.kind === 'kv' && r.dst === `[${h.h2.addr6}]:4789`),
    JSON.stringify(fdb),
  );
  assert.ok(fdb.some((r) => r.mac === '00:00:00:00:00:00' && r.dst === `[${h.h2.addr6}]:4789`));
  // a network whose MTU does not fit (1450 + 70 > 1500): the agent says so at the first attach here, with the fix
  await ag.h1.call('POST', '/v1/networks', { name: 'big', subnet: '198.19.10.0/24', mtu: 1450 });
  const c9 = topo.ns('c9', { quiet: true });
  await ag.h1.call('POST', '/v1/endpoints', { network: 'big', netns: c9, name: 'c9' });
  assert.match(
    readFileSync(ag.h1.logFile, 'utf8'),
    /"network":"big","mtu":1450,"fits":1430,"fix":"create the network with --mtu 1430 or less.*"msg":"network MTU is more than this host's underlay carries/,
  );
  await ag.h1.call('DELETE', '/v1/endpoints/c9');
  await ag.h1.call('DELETE', '/v1/networks/big');
  // an IPv6 agent cannot send to an IPv4 VTEP: the entry is refused with the reason
  const r = ag.h1.cli(['fdb', 'add', 'blue', '00:00:00:00:00:00', '198.18.0.3']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /IPv4 VTEP, this agent's underlay is IPv6/);
});

test('vxtap <-> vxtap over IPv6: ping and byte-exact TCP both ways', { skip }, async () => {
  assert.ok(await waitPing(c.c1, '198.19.9.20'), 'c1 -> c2');
  assert.equal(ping(c.c1, '198.19.9.20', 5).received, 5);
  assert.equal(ping(c.c2, '198.19.9.10', 5).received, 5);
  await tcpBothWays([c.c1, '198.19.9.10'], [c.c2, '198.19.9.20']);
  const st = await stats(ag.h2);
  const peer = st.peers.find((p) => p.vtep === h.h1.addr6);
  assert.ok(peer && peer.rx_packets > 1000, JSON.stringify(st.peers));
});

test(
  'vxtap <-> kernel VXLAN over IPv6: ping and byte-exact TCP both ways, captured and dissected by tshark',
  { skip },
  async () => {
    const pcap = join(topo.dir, 'underlay6.pcap');
    const cap = await startCapture(topo, h.h1.ns, h.h1.ifname, 'ip6 and udp port 4789', pcap);
    assert.ok(await waitPing(c.c1, '198.19.9.30'), 'vxtap container reaches the kernel container');
    assert.ok(
      await until(() => ping(c.c1, '198.19.9.30', 1).received === 1 && cap.printed().length > 0, 10_000),
      'the capture sees the overlay',
    );
    assert.equal(ping(c.c1, '198.19.9.30', 5).received, 5, 'c1 (vxtap) -> c3 (kernel)');
    assert.equal(ping(c.c3, '198.19.9.10', 5).received, 5, 'c3 (kernel) -> c1 (vxtap)');
    await tcpBothWays([c.c1, '198.19.9.10'], [c.c3, '198.19.9.30']);
    // learning both ways: the kernel learned c1 behind vxtap's IPv6 VTEP, vxtap learned c3 behind the kernel's
    assert.match(
      must(['bridge', '-n', h.h3.ns, 'fdb', 'show', 'dev', 'vx0']),
      new RegExp(`${mac.c1} dst ${h.h1.addr6}`),
    );
    const fdb = await ag.h1.call<{ mac: string; kind: string; dst: string }[]>('GET', '/v1/fdb?network=blue');
    assert.ok(
      fdb.some((r) => r.mac === mac.c3 && r.kind === 'learned' && r.dst === `[${h.h3.addr6}]:4789`),
      JSON.stringify(fdb),
    );
    await cap.stop();
    const OFF = ['-o', 'tcp.analyze_sequence_numbers:FALSE', '-o', 'tcp.desegment_tcp_streams:FALSE'];
    const count = (filter: string): number => {
      const r = sh(['tshark', '-n', ...OFF, '-r', pcap, '-Y', filter, '-T', 'fields', '-e', 'frame.number'], 180_000);
      assert.equal(r.code, 0, r.stderr);
      return r.stdout.split('\n').filter(Boolean).length;
    };
    const total = count('udp.port == 4789');
    assert.ok(total > 100, `captured ${total} datagrams`);
    assert.equal(count('ipv6 && vxlan'), total, 'every datagram is VXLAN over IPv6');
    assert.equal(count('_ws.malformed'), 0, 'no malformed packets');
    assert.equal(count('udp.checksum == 0'), 0, 'every outer UDP checksum is set (IPv6 requires it)');
    const fromVxtap = count(`ipv6.src == ${h.h1.addr6} && vxlan.vni == 4099`);
    const fromKernel = count(`ipv6.src == ${h.h3.addr6} && vxlan.vni == 4099`);
    assert.ok(fromVxtap > 20 && fromKernel > 20, `both directions captured (${fromVxtap} / ${fromKernel})`);
    console.log(
      `# captured ${total} VXLAN-over-IPv6 datagrams (${fromVxtap} from vxtap, ${fromKernel} from the kernel)`,
    );
  },
);

test('a VXLAN datagram from an IPv6 address that is no VTEP is dropped and counted', { skip }, async () => {
  const before = (await stats(ag.h1)).counters.rx_unknown_vtep;
  const stranger = '2001:db8:18::99';
  must(['ip', '-n', h.h3.ns, 'addr', 'add', `${stranger}/64`, 'dev', h.h3.ifname, 'nodad']);
  // 10 well-formed VXLAN datagrams (flags I, VNI 4099, a broadcast frame) from that address to h1's port
  const js = `const d=require('dgram').createSocket({type:'udp6'});const b=Buffer.alloc(8+60);b[0]=8;b.writeUIntBE(4099,4,3);b.fill(255,8,14);b[14]=2;b[19]=9;b[20]=8;d.bind({address:'${stranger}'},async()=>{for(let i=0;i<10;i++)await new Promise(r=>d.send(b,4789,'${h.h1.addr6}',r));d.close()})`;
  must(['ip', 'netns', 'exec', h.h3.ns, 'node', '-e', js]);
  assert.ok(
    await until(async () => (await stats(ag.h1)).counters.rx_unknown_vtep >= before + 10, 5000),
    'rx_unknown_vtep +10',
  );
});

test('an IPv6 --vtep that is not an address of the host is refused with the reason', { skip }, async () => {
  const r = sh(
    [
      'ip',
      'netns',
      'exec',
      h.h1.ns,
      'node',
      CLI,
      'agent',
      '--vtep',
      '2001:db8:18::77',
      '--kv',
      join(topo.dir, 'x.db'),
      '--socket',
      join(topo.dir, 'x.sock'),
      '--state-dir',
      join(topo.dir, 'x-state'),
    ],
    20_000,
  );
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /VTEP address 2001:db8:18::77 is not an address of this host/);
});
