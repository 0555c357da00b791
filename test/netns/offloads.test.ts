/**
 * The offloads beyond plain TCP over IPv4 (which two-hosts.test.ts covers): TSO with ECN, TCP over IPv6 and UDP
 * segmentation (USO).
 * - ECN: a TCP sender that answers congestion marks sets CWR on its next data; with TSO_ECN offered, that
 *   super-frame still reaches the agent whole (flagged ECN) and is cut with CWR on its first segment only.
 * - IPv6: the overlay is L2, so IPv6 always crossed it; what this pins is that TCP over IPv6 gets what TCP over
 *   IPv4 gets: the container's stack hands over TSO6 super-frames, which the agent cuts into valid segments for a
 *   VTEP (or passes whole to a local endpoint), and segments from the wire are merged back into TCPV6 super-frames
 *   (GRO). The containers use only their link-local addresses (fe80::/64, derived from the MAC), so no address
 *   outside the test's ranges is configured anywhere.
 * - USO: an application's UDP_SEGMENT send (a QUIC server's way) reaches the agent as one super-datagram, which it
 *   cuts into the datagrams the application asked for (test/helpers/udpgso.c sends and checks them); the receiving
 *   agent merges equal-sized datagrams of a flow back into UDP_L4 super-frames, which the container's stack cuts
 *   into the same datagrams again for a socket without UDP_GRO.
 *   h1: vxtap, c1 and c1b       h2: vxtap, c2       h3: the kernel's VXLAN device + bridge, c3 on a veth
 * One network, VNI 4097. The kernel checks every segment's checksum, so a bad split cannot pass the kernel leg;
 * its offloads are at their defaults, so what it sends carries partial inner checksums (kernel-interop.test.ts).
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type Agent, isRoot, must, ping, sh, sleep, tcpTransfer, Topo, waitPing } from '../helpers/topo.js';

const skip = isRoot() ? false : 'needs root (network namespaces)';
let topo: Topo;
const ag: Record<string, Agent> = {};
const ns: Record<string, string> = {};
const ll: Record<string, string> = {}; // link-local address, scoped to eth0
let udpgso = ''; // the built test/helpers/udpgso.c

interface Stats {
  counters: Record<string, number>;
}

function linkLocal(netns: string): string {
  const addrs = JSON.parse(must(['ip', '-n', netns, '-6', '-j', 'addr', 'show', 'dev', 'eth0', 'scope', 'link']));
  const a = addrs[0]?.addr_info?.find(
    (x: { local?: string; tentative?: boolean }) => x.local?.startsWith('fe80:') && !x.tentative,
  )?.local;
  if (!a) throw new Error(`no link-local address on eth0 in ${netns}: ${JSON.stringify(addrs)}`);
  return `${a}%eth0`;
}

/** Waits for duplicate address detection to finish (a tentative address cannot be used yet). */
async function linkLocalReady(netns: string): Promise<string> {
  for (let i = 0; i < 100; i++) {
    try {
      return linkLocal(netns);
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return linkLocal(netns);
}

before(async () => {
  if (skip) return;
  topo = new Topo();
  const h1 = topo.host('h1');
  const h2 = topo.host('h2');
  const h3 = topo.host('h3');
  ag.h1 = await topo.agent(h1);
  ag.h2 = await topo.agent(h2);
  await ag.h1.call('POST', '/v1/networks', { name: 'blue', vni: 4097, subnet: '198.19.1.0/24' });
  for (const [h, name, ip] of [
    ['h1', 'c1', '198.19.1.10'],
    ['h1', 'c1b', '198.19.1.11'],
    ['h2', 'c2', '198.19.1.20'],
  ]) {
    ns[name] = topo.ns(name); // IPv6 stays on
    await ag[h].call('POST', '/v1/endpoints', { network: 'blue', netns: ns[name], name, ip });
  }
  // the kernel VTEP: not in the store, so each agent gets it as a static flood entry, and the kernel gets both
  for (const h of ['h1', 'h2'])
    await ag[h].call('POST', '/v1/fdb', { network: 'blue', mac: '00:00:00:00:00:00', dst: h3.addr });
  ns.c3 = topo.ns('c3');
  const k = (args: string[]) => must(['ip', '-n', h3.ns, ...args]);
  k(['link', 'add', 'vx0', 'type', 'vxlan', 'id', '4097', 'dstport', '4789', 'local', h3.addr, 'dev', h3.ifname]);
  k(['link', 'add', 'br0', 'type', 'bridge']);
  k(['link', 'set', 'vx0', 'master', 'br0', 'up']);
  k(['link', 'add', 'k3', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns.c3]);
  k(['link', 'set', 'k3', 'master', 'br0', 'mtu', '1450', 'up']);
  k(['link', 'set', 'br0', 'up']);
  for (const dst of [h1.addr, h2.addr])
    must(['bridge', '-n', h3.ns, 'fdb', 'append', '00:00:00:00:00:00', 'dev', 'vx0', 'dst', dst]);
  // offloads left on: the kernel's partial inner checksums are completed by the agents (rx_csum_completed), and
  // its TCP super-frames cross the veth whole inside one VXLAN datagram (delivered whole: TCP is a byte stream).
  // All but USO: a UDP_SEGMENT super-frame would also cross whole, and its datagram boundaries (gso_size) are not
  // in the VXLAN payload, so nobody after the veth can cut it back (README, "Kernel peers with offloads on").
  must(['ip', 'netns', 'exec', h3.ns, 'ethtool', '-K', h3.ifname, 'tx-udp-segmentation', 'off']);
  must(['ip', '-n', ns.c3, 'link', 'set', 'eth0', 'mtu', '1450', 'up']);
  must(['ip', '-n', ns.c3, 'addr', 'add', '198.19.1.30/24', 'dev', 'eth0']);
  udpgso = join(topo.dir, 'udpgso');
  const root = resolve(fileURLToPath(import.meta.url), '../../../..');
  must(['cc', '-O2', '-Wall', '-o', udpgso, join(root, 'test/helpers/udpgso.c')]);
  for (const c of ['c1', 'c1b', 'c2', 'c3']) ll[c] = await linkLocalReady(ns[c]);
});

after(async () => {
  if (topo) await topo.cleanup();
});

const stats = async (h: string): Promise<Record<string, number>> =>
  (await ag[h].call<Stats>('GET', '/v1/stats')).counters;

async function transfer(from: string, to: string, size: number): Promise<void> {
  const r = await tcpTransfer(topo, ns[from], ns[to], ll[to], size);
  assert.equal(r.got.bytes, size, `${from} -> ${to}: bytes`);
  assert.equal(r.got.sha256, r.sent.sha256, `${from} -> ${to}: content intact`);
}

test('the TAP offers TSO over IPv6 to the container', { skip }, () => {
  const k = must(['ip', 'netns', 'exec', ns.c1, 'ethtool', '-k', 'eth0']);
  assert.match(k, /tx-tcp-segmentation: on/);
  assert.match(k, /tx-tcp6-segmentation: on/);
});

test(
  'TSO with ECN: a sender that answers congestion marks with CWR still hands over super-frames; cut with CWR on the first segment, byte-exact',
  { skip },
  async () => {
    assert.match(must(['ip', 'netns', 'exec', ns.c2, 'ethtool', '-k', 'eth0']), /tx-tcp-ecn-segmentation: on/);
    await waitPing(ns.c2, '198.19.1.10');
    for (const c of ['c1', 'c2']) must(['ip', 'netns', 'exec', ns[c], 'sysctl', '-qw', 'net.ipv4.tcp_ecn=1']);
    // c1 marks every ECN-capable TCP packet it receives CE (nftables, on arrival), as a congested router on the path
    // would: c1 then echoes ECE and c2 answers with CWR on its next data, which its stack hands over as a super-frame
    // flagged ECN
    const nft = (args: string[]) => must(['ip', 'netns', 'exec', ns.c1, 'nft', ...args]);
    nft(['add', 'table', 'ip', 'vxecn']);
    try {
      nft(['add', 'chain', 'ip', 'vxecn', 'in', '{ type filter hook prerouting priority 0; }']);
      nft([
        'add',
        'rule',
        'ip',
        'vxecn',
        'in',
        'ip',
        'protocol',
        'tcp',
        'ip',
        'ecn',
        '!=',
        'not-ect',
        'ip',
        'ecn',
        'set',
        'ce',
      ]);
      const b = await stats('h2');
      const size = 4 * 1024 * 1024 + 9;
      const r = await tcpTransfer(topo, ns.c2, ns.c1, '198.19.1.10', size);
      assert.equal(r.got.bytes, size);
      assert.equal(r.got.sha256, r.sent.sha256, 'content intact');
      const a = await stats('h2');
      console.log(
        `# h2: ${a.tx_gso_ecn - b.tx_gso_ecn} of ${a.tx_gso_frames - b.tx_gso_frames} super-frames flagged ECN`,
      );
      assert.ok(a.tx_gso_ecn - b.tx_gso_ecn > 0, 'super-frames flagged ECN reached the agent');
      assert.equal(a.tx_bad_offload, 0);
    } finally {
      nft(['delete', 'table', 'ip', 'vxecn']);
      for (const c of ['c1', 'c2']) must(['ip', 'netns', 'exec', ns[c], 'sysctl', '-qw', 'net.ipv4.tcp_ecn=2']);
    }
  },
);

test('IPv6 across hosts: ping and byte-exact TCP both ways, cut by TSO6 and merged by GRO', { skip }, async () => {
  assert.ok(await waitPing(ns.c2, ll.c1), 'c2 -> c1 over IPv6 link-local');
  assert.equal(ping(ns.c1, ll.c2, 3).received, 3, 'c1 -> c2');
  const [b1, b2] = [await stats('h1'), await stats('h2')];
  const size = 24 * 1024 * 1024 + 77;
  await transfer('c2', 'c1', size);
  await transfer('c1', 'c2', size);
  const [a1, a2] = [await stats('h1'), await stats('h2')];
  for (const [h, b, a] of [
    ['h1', b1, a1],
    ['h2', b2, a2],
  ] as const) {
    assert.ok(
      a.tx_gso_frames - b.tx_gso_frames > 100,
      `${h} cut TSO super-frames: ${a.tx_gso_frames - b.tx_gso_frames}`,
    );
    assert.ok(
      a.tx_gso_segments - b.tx_gso_segments > 10 * (a.tx_gso_frames - b.tx_gso_frames),
      `${h}: many segments per super-frame`,
    );
    assert.ok(
      a.rx_gro_frames - b.rx_gro_frames > 100,
      `${h} merged segments into super-frames: ${a.rx_gro_frames - b.rx_gro_frames}`,
    );
    assert.equal(a.tx_bad_offload, 0, `${h}: no refused offload`);
    assert.equal(a.rx_gro_bad_csum, 0, `${h}: every segment's checksum verified`);
  }
});

test(
  'IPv6 MTU: a container that raises its MTU gets ICMPv6 packet-too-big from the agent and learns the path MTU',
  { skip },
  async () => {
    assert.ok(await waitPing(ns.c1, ll.c2));
    must(['ip', '-n', ns.c1, 'link', 'set', 'eth0', 'mtu', '4000']);
    try {
      const b = await stats('h1');
      const p = sh([
        'ip',
        'netns',
        'exec',
        ns.c1,
        'ping',
        '-6',
        '-n',
        '-c',
        '2',
        '-M',
        'do',
        '-s',
        '3000',
        '-W',
        '1',
        ll.c2,
      ]);
      assert.match(p.stdout + p.stderr, /mtu ?= ?1450/i, `ping learns the path MTU: ${p.stdout}${p.stderr}`);
      // now the sender's stack fragments to the path MTU, and the big echoes get through
      const q = sh([
        'ip',
        'netns',
        'exec',
        ns.c1,
        'ping',
        '-6',
        '-n',
        '-c',
        '3',
        '-i',
        '0.2',
        '-s',
        '3000',
        '-W',
        '1',
        ll.c2,
      ]);
      assert.match(q.stdout, / 3 received/, `fragmented echoes: ${q.stdout}${q.stderr}`);
      const a = await stats('h1');
      assert.ok(
        a.icmp6_packet_too_big - b.icmp6_packet_too_big >= 1,
        `packet-too-big sent: ${a.icmp6_packet_too_big - b.icmp6_packet_too_big}`,
      );
    } finally {
      must(['ip', '-n', ns.c1, 'link', 'set', 'eth0', 'mtu', '1450']);
    }
  },
);

test('IPv6 between two containers of one host: super-frames pass whole', { skip }, async () => {
  const b = await stats('h1');
  await transfer('c1', 'c1b', 8 * 1024 * 1024 + 5);
  const a = await stats('h1');
  assert.ok(a.tx_local_frames - b.tx_local_frames > 0);
  assert.ok(a.tx_gso_frames - b.tx_gso_frames > 0, 'super-frames were read');
  assert.equal(a.tx_gso_segments - b.tx_gso_segments, 0, 'and none was cut: they went to the local endpoint whole');
});

test('IPv6 with the kernel VXLAN peer: byte-exact TCP both ways', { skip }, async () => {
  assert.ok(await waitPing(ns.c1, ll.c3), 'c1 (vxtap) -> c3 (kernel)');
  assert.equal(ping(ns.c3, ll.c2, 3).received, 3, 'c3 (kernel) -> c2 (vxtap)');
  const b = await stats('h1');
  const size = 8 * 1024 * 1024 + 3;
  await transfer('c1', 'c3', size); // the kernel verifies every segment vxtap cut
  await transfer('c3', 'c1', size); // the kernel's TCP comes as whole super-frames (offloads on), or merged by vxtap
  const a = await stats('h1');
  const big = (a.rx_bytes - b.rx_bytes) / Math.max(1, a.rx_frames - b.rx_frames);
  assert.ok(
    a.rx_gro_frames - b.rx_gro_frames > 10 || big > 4000,
    `the kernel's data arrived in large frames: ${a.rx_gro_frames - b.rx_gro_frames} merged, ${big.toFixed(0)} bytes per frame`,
  );
  assert.ok(a.rx_csum_completed > b.rx_csum_completed, "the kernel's partial checksums were completed");
  assert.equal(a.tx_bad_offload, 0);
  assert.equal(a.rx_gro_bad_csum, 0);
});

/** `count` UDP_SEGMENT sends of 40 x `seg` bytes from one container to another; the receiver checks each datagram. */
async function udpGso(
  from: string,
  to: string,
  addr: string,
  count: number,
  seg: number,
): Promise<{ got: number; bad: number }> {
  const rcv = topo.spawn([
    'ip',
    'netns',
    'exec',
    ns[to],
    udpgso,
    'recv',
    addr,
    '7000',
    String(count * 40),
    String(seg),
  ]);
  let out = '';
  rcv.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  await new Promise<void>((res, rej) => {
    rcv.stderr!.once('data', () => res());
    rcv.once('exit', (c) => rej(new Error(`udpgso recv exited ${c}`)));
  });
  const snd = sh(
    ['ip', 'netns', 'exec', ns[from], udpgso, 'send', addr, '7000', String(count), String(seg), '40'],
    30_000,
  );
  assert.equal(snd.code, 0, `udpgso send: ${snd.stderr}`);
  if (rcv.exitCode === null) await new Promise((res) => rcv.once('exit', res));
  const m = /got (\d+) bad (\d+)/.exec(out);
  assert.ok(m, `udpgso recv printed: ${out}`);
  return { got: Number(m[1]), bad: Number(m[2]) };
}

test(
  'USO: UDP_SEGMENT sends over IPv4 and IPv6 arrive as every datagram, intact and in order, across hosts and at the kernel peer; the receiving agent merges them back',
  { skip },
  async () => {
    assert.match(must(['ip', 'netns', 'exec', ns.c2, 'ethtool', '-k', 'eth0']), /tx-udp-segmentation: on/);
    await waitPing(ns.c2, '198.19.1.10');
    await waitPing(ns.c1, '198.19.1.30');
    await waitPing(ns.c3, '198.19.1.10');
    const cases = [
      ['c2', 'c1', '198.19.1.10', 1200],
      ['c2', 'c1', ll.c1, 1350],
      ['c1', 'c3', '198.19.1.30', 1000],
      ['c1', 'c3', ll.c3, 1200],
      ['c3', 'c1', '198.19.1.10', 1100],
      ['c3', 'c1', ll.c1, 1000],
    ] as const;
    for (const [from, to, addr, seg] of cases) {
      const h = from === 'c2' ? 'h2' : 'h1'; // the sender's agent (c3's is the kernel)
      const [b, b1] = [await stats(h), await stats('h1')];
      const r = await udpGso(from, to, addr, 100, seg);
      const [a, a1] = [await stats(h), await stats('h1')];
      assert.deepEqual(r, { got: 4000, bad: 0 }, `${from} -> ${to} (${addr}, ${seg}-byte datagrams)`);
      if (from !== 'c3') {
        // each send reached the agent as one super-datagram (the kernel cuts it only past gso_max_segs, 44 here)
        assert.equal(a.tx_gso_frames - b.tx_gso_frames, 100, `${h}: super-datagrams read`);
        assert.equal(a.tx_gso_segments - b.tx_gso_segments, 4000, `${h}: datagrams cut from them`);
        assert.equal(a.tx_bad_offload, 0);
      }
      if (to === 'c1') {
        // h1 merged the datagrams into UDP_L4 super-frames (up to 64 each); the receiving stack cut them back for
        // udpgso's socket (no UDP_GRO there), which checked every datagram above
        const frames = a1.rx_gro_udp_frames - b1.rx_gro_udp_frames;
        const merged = a1.rx_gro_segments - b1.rx_gro_segments;
        console.log(`# ${from} -> c1 (${addr}): h1 merged ${merged} of 4000 datagrams into ${frames} UDP super-frames`);
        assert.ok(
          frames >= 4000 / 64 && merged >= 2000,
          `${from} -> c1 (${addr}): h1 merged ${merged} datagrams into ${frames} UDP super-frames`,
        );
        assert.equal(a1.rx_gro_bad_csum, 0, "every datagram's checksum verified");
      }
      await sleep(50);
    }
    // to a container on the same host the super-datagram goes whole; the receiving stack cuts it for the socket
    const b = await stats('h1');
    assert.deepEqual(await udpGso('c1', 'c1b', '198.19.1.11', 100, 1200), { got: 4000, bad: 0 }, 'c1 -> c1b');
    const a = await stats('h1');
    assert.equal(a.tx_gso_frames - b.tx_gso_frames, 100);
    assert.equal(a.tx_gso_segments - b.tx_gso_segments, 0, 'none cut by the agent');
  },
);
