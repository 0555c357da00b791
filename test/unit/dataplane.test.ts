import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Dataplane } from '../../src/dataplane/dataplane.js';
import { Fdb, type Nd6, ndGet, ndSet } from '../../src/fdb/fdb.js';
import type { Port } from '../../src/dataplane/port.js';
import { readVni } from '../../src/vxlan/vxlan.js';
import { flowHash, pickIndex } from '../../src/vxlan/flowhash.js';
import { IPPROTO_TCP } from '../../src/vxlan/constants.js';
import { internetChecksum, finish, sum16, pseudoSumV4 } from '../../src/vxlan/checksum.js';
import { ethernet } from '../../src/vxlan/ethernet.js';
import { ipv4 } from '../../src/vxlan/ipv4.js';
import { tcp } from '../../src/vxlan/tcp.js';
import { FakeIo } from '../helpers/fakeio.js';
import { arpRequest, ipv4Frame, macBytes, tcpSuperFrame, vxlanDatagram } from '../helpers/frames.js';

const VNI = 4097;
const PEER = 0xc6120002; // 198.18.0.2
const PEER3 = 0xc6120003;
const STRANGER = 0xc6120063;
const MAC_A = 0x020000000a01;
const MAC_B = 0x020000000a02;
const MAC_R = 0x020000000b01; // remote container
const BCAST = 0xffffffffffff;
const IP_A = 0xc613010a; // 198.19.1.10
const IP_B = 0xc613010b;

function setup(
  opts: {
    txSockets?: number;
    learning?: boolean;
    ip?: boolean;
    mtu?: number;
    checkIpv6?: boolean;
    allowTagged?: boolean;
    storm?: [pps: number, burst: number];
    maxLearned?: number;
    /** endpoint a's IPv6 address (dual stack) */
    ip6?: Uint8Array;
  } = {},
) {
  const io = new FakeIo();
  let t = 1000;
  const fdb = new Fdb<Port>({ now: () => t, maxLearned: opts.maxLearned });
  const udpFd = io.udp();
  const txFds = Array.from({ length: opts.txSockets ?? 1 }, () => io.udp());
  const failed: string[] = [];
  const dp = new Dataplane({
    io,
    fdb,
    udpFd,
    txFds,
    vxlanPort: 4789,
    batch: 8,
    frameMax: 9000,
    stormPps: opts.storm?.[0],
    stormBurst: opts.storm?.[1],
    onPortError: (p) => failed.push(p.id),
  });
  dp.addVni(VNI, opts.learning ?? true);
  dp.start();
  const a = dp.addPort({
    id: 'a',
    mac: MAC_A,
    vni: VNI,
    fd: io.tap(),
    ifname: 'eth0',
    ip: opts.ip ? IP_A : 0,
    mtu: opts.mtu,
    checkIpv6Source: opts.checkIpv6,
    ip6: opts.ip6,
    allowTagged: opts.allowTagged,
  });
  const b = dp.addPort({
    id: 'b',
    mac: MAC_B,
    vni: VNI,
    fd: io.tap(),
    ifname: 'eth0',
    ip: opts.ip ? IP_B : 0,
    mtu: opts.mtu,
    checkIpv6Source: opts.checkIpv6,
    allowTagged: opts.allowTagged,
  });
  fdb.floodAdd(VNI, PEER, 4789, 'static');
  fdb.floodAdd(VNI, PEER3, 4789, 'static');
  const fromTap = (p: Port, ...frames: Uint8Array[]) => {
    io.tapIn.get(p.fd)!.push(...frames);
    io.ready(p.fd);
  };
  const fromWire = (src: number, ...data: Uint8Array[]) => {
    io.udpIn.get(udpFd)!.push(...data.map((d) => ({ data: d, addr: src, port: 51000 })));
    io.ready(udpFd);
  };
  return { io, fdb, dp, a, b, fromTap, fromWire, failed, tick: (ms: number) => (t += ms) };
}

test('xmit: unicast to a known remote MAC is encapsulated once, to its VTEP, with the VNI', () => {
  const { io, fdb, dp, a, fromTap } = setup();
  fdb.set(VNI, MAC_R, 'kv', { vtep: PEER3, port: 8472 });
  const f = ipv4Frame(MAC_R, MAC_A, { size: 200 });
  fromTap(a, f);
  assert.equal(io.sent.length, 1);
  const d = io.sent[0];
  assert.equal(d.addr, PEER3);
  assert.equal(d.port, 8472);
  assert.equal(d.data.length, 208);
  assert.deepEqual([...d.data.subarray(0, 4)], [0x08, 0, 0, 0]);
  assert.equal(readVni(d.data, 0), VNI);
  assert.equal(d.data[7], 0);
  assert.deepEqual(d.data.subarray(8), f, 'inner frame is carried unchanged');
  assert.equal(dp.counters.tx_udp_datagrams, 1);
  assert.equal(dp.counters.totalDrops(), 0);
});

test('xmit: broadcast goes to every other local endpoint and every flood-list VTEP (head-end replication)', () => {
  const { io, dp, a, b, fromTap } = setup();
  const arp = arpRequest(MAC_A, 0xc6130102, 0xc6130103);
  fromTap(a, arp);
  assert.deepEqual(io.sent.map((d) => d.addr).sort(), [PEER, PEER3].sort());
  for (const d of io.sent) assert.deepEqual(d.data.subarray(8), arp);
  assert.equal(io.tapOut.get(b.fd)!.length, 1, 'the other local endpoint gets a copy');
  assert.equal(io.tapOut.get(a.fd)!.length, 0, 'the sender does not');
  assert.equal(dp.counters.tx_local_frames, 1);
});

test('xmit: unknown unicast floods; local destination never leaves the host', () => {
  const { io, a, b, fromTap } = setup();
  fromTap(a, ipv4Frame(0x02000000ffff, MAC_A));
  assert.equal(io.sent.length, 2, 'unknown unicast floods to the VTEPs');
  io.sent.length = 0;
  fromTap(a, ipv4Frame(MAC_B, MAC_A));
  assert.equal(io.sent.length, 0);
  assert.equal(io.tapOut.get(b.fd)!.length, 2);
});

test('xmit: drops are counted by reason and do not stop the batch', () => {
  const { io, dp, a, fromTap, fdb } = setup();
  fdb.set(VNI, MAC_R, 'kv', { vtep: PEER, port: 4789 });
  fromTap(
    a,
    new Uint8Array(10), // short
    ipv4Frame(MAC_R, MAC_B), // spoofed source (b's MAC from a's port)
    ipv4Frame(MAC_A, MAC_A), // to itself
    ipv4Frame(MAC_R, BCAST), // group source
    ipv4Frame(MAC_R, MAC_A), // good
  );
  const c = dp.counters;
  assert.equal(c.tx_short, 1);
  assert.equal(c.tx_spoofed_src_mac, 1);
  assert.equal(c.tx_hairpin, 1);
  assert.equal(c.tx_group_src_mac, 1);
  assert.equal(io.sent.length, 1);
  assert.equal(c.tx_packets, 5);
});

test('xmit: a batch larger than the batch size is drained in several reads', () => {
  const { io, a, fromTap, fdb, dp } = setup();
  fdb.set(VNI, MAC_R, 'kv', { vtep: PEER, port: 4789 });
  const frames = Array.from({ length: 20 }, (_, i) => ipv4Frame(MAC_R, MAC_A, { sport: i }));
  fromTap(a, ...frames);
  assert.equal(io.sent.length, 20);
  assert.equal(dp.counters.tx_batches, 3);
  io.sent.forEach((d, i) => assert.deepEqual(d.data.subarray(8), frames[i], 'order kept'));
});

test('xmit: the flow hash picks the transmit socket, so each flow keeps one outer source port', () => {
  const { io, a, fromTap, fdb } = setup({ txSockets: 4 });
  fdb.set(VNI, MAC_R, 'kv', { vtep: PEER, port: 4789 });
  const used = new Set<number>();
  for (let p = 0; p < 64; p++) {
    const f = ipv4Frame(MAC_R, MAC_A, { proto: IPPROTO_TCP, sport: 40000 + p, dport: 80 });
    fromTap(a, f, f);
    const [x, y] = io.sent.splice(0);
    assert.equal(x.sock, y.sock, 'same flow, same socket');
    assert.equal(x.sock, pickIndex(flowHash(f, 0, f.length), 4));
    used.add(x.sock!);
  }
  assert.equal(used.size, 4, '64 flows use all 4 sockets');
});

test('xmit: send failures are counted by errno, nothing throws', () => {
  const { io, dp, a, fromTap } = setup();
  io.failSends = -105; // ENOBUFS
  fromTap(a, arpRequest(MAC_A, 1, 2));
  assert.equal(dp.counters.tx_udp_error, 2);
  assert.equal(dp.counters.errnos.get(-105), 2);
});

test('rcv: delivers to the owning endpoint and learns the sender', () => {
  const { io, dp, a, b, fromWire, fdb } = setup();
  const inner = ipv4Frame(MAC_A, MAC_R);
  fromWire(PEER, vxlanDatagram(VNI, inner));
  assert.deepEqual(io.tapOut.get(a.fd)![0], inner);
  assert.equal(io.tapOut.get(b.fd)!.length, 0);
  const e = fdb.vnet(VNI).entries.get(MAC_R)!;
  assert.equal(e.kind, 'learned');
  assert.equal(e.vtep, PEER);
  assert.equal(e.port, 4789, "learned destination is the VXLAN port, not the sender's source port");
  assert.equal(dp.counters.learned, 1);
  fromWire(PEER, vxlanDatagram(VNI, ipv4Frame(BCAST, MAC_R)));
  assert.equal(io.tapOut.get(a.fd)!.length, 2, 'broadcast to every local endpoint');
  assert.equal(io.tapOut.get(b.fd)!.length, 1);
  assert.equal(io.sent.length, 0, 'split horizon: nothing from the wire goes back to the wire');
});

test('rcv: an answer the container queues during the TAP write is sent in the same callback', () => {
  const { io, dp, a, b, fromWire, fdb } = setup();
  fdb.set(VNI, MAC_R, 'static', { vtep: PEER, port: 4789 });
  const reply = ipv4Frame(MAC_R, MAC_A);
  io.onTapWrite = (fd) => {
    if (fd === a.fd) io.tapIn.get(a.fd)!.push(reply); // a's stack answers inside the write, like a real one
  };
  fromWire(PEER, vxlanDatagram(VNI, ipv4Frame(MAC_A, MAC_R)));
  // no poll event for a's TAP was fired: the data plane read it because it had just written to it
  assert.equal(io.sent.length, 1, 'the answer left in the receive callback');
  assert.equal(io.sent[0].addr, PEER);
  assert.deepEqual(io.sent[0].data.subarray(8), reply);
  assert.equal(io.reads.get(b.fd) ?? 0, 0, 'a TAP that was not written to is not read');
  // once per callback: the written flag is cleared, so the next callback reads a again, and only once
  const before = io.reads.get(a.fd)!;
  io.onTapWrite = null;
  fromWire(PEER, vxlanDatagram(VNI, ipv4Frame(MAC_A, MAC_R)), vxlanDatagram(VNI, ipv4Frame(MAC_A, MAC_R)));
  assert.equal(io.reads.get(a.fd)! - before, 1, 'one read per written TAP per callback');
  assert.equal(io.sent.length, 1, 'nothing more to send');
  assert.equal(dp.counters.tx_packets, 1);
});

test('rcv: every malformed or unwanted datagram is dropped and counted by reason', () => {
  const { io, dp, a, fromWire } = setup();
  const good = ipv4Frame(MAC_A, MAC_R);
  fromWire(
    PEER,
    new Uint8Array(5), // rx_short
    vxlanDatagram(VNI, new Uint8Array(6)), // rx_short (inner < 14)
    vxlanDatagram(VNI, good, 0x00), // rx_bad_flags: I missing
    vxlanDatagram(VNI, good, 0x0c), // rx_bad_flags: extra bit
    vxlanDatagram(4242, good), // rx_unknown_vni
    vxlanDatagram(VNI, ipv4Frame(MAC_A, 0x010000000001)), // rx_group_src_mac
    vxlanDatagram(VNI, ipv4Frame(MAC_A, MAC_A)), // rx_src_mac_local (claims a local MAC)
    vxlanDatagram(VNI, ipv4Frame(0x02000000dead, MAC_R)), // rx_no_local_dst
    new Uint8Array(10000), // rx_truncated (slot holds 9000)
    vxlanDatagram(VNI, good), // delivered
  );
  fromWire(STRANGER, vxlanDatagram(VNI, good)); // rx_unknown_vtep
  const c = dp.counters;
  assert.deepEqual(
    {
      short: c.rx_short,
      flags: c.rx_bad_flags,
      vni: c.rx_unknown_vni,
      gsrc: c.rx_group_src_mac,
      local: c.rx_src_mac_local,
      nodst: c.rx_no_local_dst,
      trunc: c.rx_truncated,
      vtep: c.rx_unknown_vtep,
    },
    { short: 2, flags: 2, vni: 1, gsrc: 1, local: 1, nodst: 1, trunc: 1, vtep: 1 },
  );
  assert.equal(io.tapOut.get(a.fd)!.length, 1, 'only the good one is delivered');
  assert.ok(!dp.fdb.isKnownVtep(STRANGER));
  assert.equal(dp.fdb.vnet(VNI).entries.get(MAC_A)!.kind, 'local', 'spoofed source did not move the local MAC');
});

test('rcv: no learning when the VNI has learning off', () => {
  const { fromWire, fdb, dp } = setup({ learning: false });
  fromWire(PEER, vxlanDatagram(VNI, ipv4Frame(MAC_A, MAC_R)));
  assert.equal(fdb.vnet(VNI).entries.has(MAC_R), false);
  assert.equal(dp.counters.rx_frames, 1, 'still delivered');
});

test('ports: a TAP that fails is reported once and no longer polled; removePort stops polling', () => {
  const { io, dp, a, b, failed, fromTap } = setup();
  io.brokenTaps.add(a.fd);
  fromTap(a, ipv4Frame(MAC_B, MAC_A));
  assert.deepEqual(failed, ['a']);
  assert.ok(!io.isPolled(a.fd));
  dp.removePort('b');
  assert.ok(!io.isPolled(b.fd));
  assert.equal(dp.fdb.vnet(VNI).locals.length, 1);
  assert.throws(() => dp.delVni(VNI), /still has endpoint/);
});

test('fuzz: random datagrams and frames never throw out of the loop', () => {
  const { io, dp, a, fromWire, fromTap } = setup();
  let errors = 0;
  (dp as unknown as { onLoopError: (e: unknown) => void }).onLoopError = () => errors++;
  for (let i = 0; i < 3000; i++) {
    const len = Math.floor(Math.random() * 120);
    const junk = new Uint8Array(len).map(() => Math.floor(Math.random() * 256));
    if (i % 3 === 0 && len > 8) {
      junk[0] = 0x08;
      junk[4] = VNI >>> 16;
      junk[5] = (VNI >>> 8) & 0xff;
      junk[6] = VNI & 0xff;
    }
    fromWire(i % 5 === 0 ? STRANGER : PEER, junk);
    const f = new Uint8Array(len).map(() => Math.floor(Math.random() * 256));
    if (i % 2 === 0 && len >= 12) new DataView(f.buffer).setUint16(6, MAC_A / 2 ** 32);
    if (i % 2 === 0 && len >= 12) new DataView(f.buffer).setUint32(8, MAC_A % 2 ** 32);
    fromTap(a, f);
  }
  assert.equal(errors, 0);
  assert.ok(dp.counters.rx_datagrams + dp.counters.rx_truncated >= 3000);
  assert.ok(dp.fdb.vnet(VNI).learned <= dp.fdb.maxLearned);
  void io;
});

test('arp: a request for a known address is answered in place to the sender, never flooded', () => {
  const { io, dp, a, b, fromTap, fdb } = setup();
  const v = fdb.vnet(VNI);
  v.arp = new Map([
    [0xc6130114, MAC_R],
    [0xc613010a, MAC_A],
  ]);
  const req = arpRequest(MAC_A, 0xc613010a, 0xc6130114); // who has .20? tell .10
  fromTap(a, req);
  assert.equal(io.sent.length, 0, 'nothing crossed the wire');
  assert.equal(io.tapOut.get(b.fd)!.length, 0, 'nor reached other local endpoints');
  const [rep] = io.tapOut.get(a.fd)!;
  assert.equal(rep.length, req.length);
  const hex = Buffer.from(rep).toString('hex');
  const mac = (m: number) => m.toString(16).padStart(12, '0');
  assert.equal(hex.slice(0, 12), mac(MAC_A), 'eth dst = requester');
  assert.equal(hex.slice(12, 24), mac(MAC_R), 'eth src = owner');
  assert.equal(hex.slice(24, 28), '0806');
  assert.equal(hex.slice(40, 44), '0002', 'op = reply');
  assert.equal(hex.slice(44, 56), mac(MAC_R), 'sha = owner');
  assert.equal(hex.slice(56, 64), 'c6130114', 'spa = the asked address');
  assert.equal(hex.slice(64, 76), mac(MAC_A), 'tha = requester');
  assert.equal(hex.slice(76, 84), 'c613010a', 'tpa = requester address');
  assert.equal(dp.counters.arp_suppressed, 1);
  // unknown target: flooded as usual; a probe for the sender's own address: not answered (RFC 5227)
  fromTap(a, arpRequest(MAC_A, 0xc613010a, 0xc6130199));
  assert.equal(io.sent.length, 2);
  fromTap(a, arpRequest(MAC_A, 0, 0xc613010a));
  assert.equal(io.sent.length, 4);
  assert.equal(dp.counters.arp_suppressed, 1);
});

test("anti-spoofing: IPv4 source and ARP sender address must be the endpoint's own", () => {
  const { io, dp, a, b, fromTap } = setup({ ip: true });
  fromTap(
    a,
    ipv4Frame(MAC_B, MAC_A, { srcIp: IP_B, dstIp: IP_B }), // claims b's address
    arpRequest(MAC_A, IP_B, 0xc6130199), // ARP poisoning: "IP_B is at MAC_A"
    arpRequest(MAC_A, 0, IP_A), // RFC 5227 probe (sender 0.0.0.0): allowed
    ipv4Frame(MAC_B, MAC_A, { srcIp: IP_A, dstIp: IP_B }), // fine
  );
  assert.equal(dp.counters.tx_spoofed_src_ip, 1);
  assert.equal(dp.counters.tx_spoofed_arp, 1);
  assert.equal(io.tapOut.get(b.fd)!.length, 2, 'the probe (flooded) and the good packet reach b');
});

/** An Ethernet/IPv6 frame from `src` (16 bytes) with next header `next` and `payload`. */
function ipv6Frame(dst: number, srcMac: number, src: Uint8Array, next: number, payload: Uint8Array): Uint8Array {
  const f = new Uint8Array(14 + 40 + payload.length);
  f.set(macBytes(dst), 0);
  f.set(macBytes(srcMac), 6);
  f[12] = 0x86;
  f[13] = 0xdd;
  f[14] = 0x60;
  f[18] = payload.length >> 8;
  f[19] = payload.length & 0xff;
  f[20] = next;
  f[21] = 255;
  f.set(src, 22);
  f.set(LL_B, 38);
  f.set(payload, 54);
  return f;
}

/** fe80:: + the modified EUI-64 of a MAC (RFC 4291): the kernel's link-local address for the TAP. */
function linkLocal(mac: number): Uint8Array {
  const m = macBytes(mac);
  return Uint8Array.from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, m[0] ^ 2, m[1], m[2], 0xff, 0xfe, m[3], m[4], m[5]]);
}
const LL_A = linkLocal(MAC_A);
const LL_B = linkLocal(MAC_B);

/** A neighbour solicitation (135) or advertisement (136) for `target`, with a link-layer address option. */
function nd(type: 135 | 136, target: Uint8Array, optMac: number | null): Uint8Array {
  const p = new Uint8Array(24 + (optMac === null ? 0 : 8));
  p[0] = type;
  p.set(target, 8);
  if (optMac !== null) {
    p[24] = type === 135 ? 1 : 2;
    p[25] = 1;
    p.set(macBytes(optMac), 26);
  }
  return p;
}

test("anti-spoofing: an IPv6 source must be the endpoint's link-local address; neighbour discovery must name its own", () => {
  const { io, dp, a, b, fromTap } = setup({ ip: true, checkIpv6: true });
  const echo = Uint8Array.from([128, 0, 0, 0, 0, 1, 0, 1]);
  const tcpish = new Uint8Array(20);
  const other = Uint8Array.from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
  const doc = Uint8Array.from([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a]);
  const any = new Uint8Array(16);
  fromTap(
    a,
    ipv6Frame(MAC_B, MAC_A, LL_A, 58, echo), // its own link-local address: fine
    ipv6Frame(MAC_B, MAC_A, other, 58, echo), // another link-local address
    ipv6Frame(MAC_B, MAC_A, doc, 58, echo), // a global one it does not have
    ipv6Frame(MAC_B, MAC_A, any, 58, nd(135, LL_A, null)), // duplicate address detection from ::: fine
    ipv6Frame(MAC_B, MAC_A, any, 6, tcpish), // :: for anything else
    ipv6Frame(MAC_B, MAC_A, LL_A, 58, nd(136, LL_B, MAC_A)), // "LL_B is at MAC_A": NDP poisoning
    ipv6Frame(MAC_B, MAC_A, LL_A, 58, nd(135, LL_B, MAC_B)), // a solicitation claiming b's MAC
    ipv6Frame(MAC_B, MAC_A, LL_A, 58, nd(136, LL_A, MAC_A)), // its own advertisement: fine
    ipv6Frame(MAC_B, MAC_A, LL_A, 58, nd(135, LL_B, MAC_A)), // asking for b, honestly: fine
  );
  assert.equal(dp.counters.tx_spoofed_src_ip6, 3);
  assert.equal(dp.counters.tx_spoofed_nd, 2);
  assert.equal(io.tapOut.get(b.fd)!.length, 4, 'the four honest packets reach b');
});

const G_A = Uint8Array.from([0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a]); // 2001:db8:1::a
const G_R = Uint8Array.from([0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x14]); // 2001:db8:1::14

test("anti-spoofing, dual stack: the endpoint's IPv6 address is its own too; no other global one is", () => {
  const { io, dp, a, b, fromTap } = setup({ ip: true, checkIpv6: true, ip6: G_A });
  const echo = Uint8Array.from([128, 0, 0, 0, 0, 1, 0, 1]);
  fromTap(
    a,
    ipv6Frame(MAC_B, MAC_A, G_A, 58, echo), // its IPv6 address: fine
    ipv6Frame(MAC_B, MAC_A, LL_A, 58, echo), // its link-local address: still fine
    ipv6Frame(MAC_B, MAC_A, G_R, 58, echo), // another endpoint's address
    ipv6Frame(MAC_B, MAC_A, G_A, 58, nd(136, G_A, MAC_A)), // advertising its own address: fine
    ipv6Frame(MAC_B, MAC_A, G_A, 58, nd(136, G_R, MAC_A)), // "G_R is at MAC_A": poisoning
  );
  assert.equal(dp.counters.tx_spoofed_src_ip6, 1);
  assert.equal(dp.counters.tx_spoofed_nd, 1);
  assert.equal(io.tapOut.get(b.fd)!.length, 3);
});

test('nd: a solicitation for a known address is answered in place to the sender, never flooded', () => {
  const { io, dp, a, b, fromTap, fdb } = setup({ checkIpv6: true, ip6: G_A });
  const v = fdb.vnet(VNI);
  ndSet(v.nd, G_R, MAC_R);
  ndSet(v.nd, G_A, MAC_A);
  const mac = (m: number) => m.toString(16).padStart(12, '0');
  const SOLICITED = 0x3333ff000014; // solicited-node multicast, as a kernel sends a solicitation
  const hexOf = (u: Uint8Array) => Buffer.from(u).toString('hex');
  /** The ICMPv6 checksum of the IPv6 packet at f[14..] verifies (RFC 1071 loop written here). */
  const verifies = (f: Uint8Array) => {
    const words: number[] = [];
    const push = (u: Uint8Array) => {
      for (let i = 0; i < u.length; i += 2) words.push((u[i] << 8) | (u[i + 1] ?? 0));
    };
    const plen = (f[18] << 8) | f[19];
    push(f.subarray(22, 54)); // source and destination
    words.push(plen >> 16, plen & 0xffff, 0, 58);
    push(f.subarray(54, 54 + plen));
    let sum = words.reduce((x, y) => x + y, 0);
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
    return sum === 0xffff;
  };
  // 1. from a's own address: the advertisement comes back from R's address and MAC, solicited and override
  fromTap(a, ipv6Frame(SOLICITED, MAC_A, G_A, 58, nd(135, G_R, MAC_A)));
  assert.equal(io.sent.length, 0, 'nothing crossed the wire');
  assert.equal(io.tapOut.get(b.fd)!.length, 0, 'nor reached other local endpoints');
  const [na] = io.tapOut.get(a.fd)!;
  assert.equal(na.length, 86);
  const hex = hexOf(na);
  assert.equal(hex.slice(0, 12), mac(MAC_A), 'eth dst = solicitor');
  assert.equal(hex.slice(12, 24), mac(MAC_R), 'eth src = owner');
  assert.equal(hex.slice(24, 28), '86dd');
  assert.equal(hex.slice(28, 36), '60000000');
  assert.equal(hex.slice(36, 40), '0020', 'payload 32 bytes');
  assert.equal(hex.slice(40, 44), '3aff', 'ICMPv6, hop limit 255');
  assert.equal(hex.slice(44, 76), hexOf(G_R), 'from the target address');
  assert.equal(hex.slice(76, 108), hexOf(G_A), 'to the solicitor');
  assert.equal(hex.slice(108, 112), '8800', 'neighbour advertisement, code 0');
  assert.equal(hex.slice(116, 124), '60000000', 'solicited, override');
  assert.equal(hex.slice(124, 156), hexOf(G_R), 'target');
  assert.equal(hex.slice(156, 160), '0201', 'target link-layer address option');
  assert.equal(hex.slice(160, 172), mac(MAC_R));
  assert.ok(verifies(na), 'ICMPv6 checksum');
  assert.equal(dp.counters.nd_suppressed, 1);
  // 2. duplicate address detection (from ::) of R's address: R defends it, to all nodes, not solicited
  fromTap(a, ipv6Frame(SOLICITED, MAC_A, new Uint8Array(16), 58, nd(135, G_R, null)));
  const dad = io.tapOut.get(a.fd)![1];
  assert.equal(hexOf(dad).slice(0, 12), '333300000001');
  assert.equal(hexOf(dad).slice(76, 108), 'ff020000000000000000000000000001');
  assert.equal(hexOf(dad).slice(116, 124), '20000000', 'override only');
  assert.ok(verifies(dad));
  assert.equal(dp.counters.nd_suppressed, 2);
  // 3. unknown target: flooded as usual; DAD of a's own address: not answered (and flooded)
  fromTap(a, ipv6Frame(SOLICITED, MAC_A, G_A, 58, nd(135, Uint8Array.from([...G_R.subarray(0, 15), 0x99]), MAC_A)));
  assert.equal(io.sent.length, 2);
  fromTap(a, ipv6Frame(SOLICITED, MAC_A, new Uint8Array(16), 58, nd(135, G_A, null)));
  assert.equal(io.sent.length, 4);
  assert.equal(dp.counters.nd_suppressed, 2);
  assert.equal(io.tapOut.get(a.fd)!.length, 2);
});

test('nd table: addresses sharing their last 32 bits are told apart; entries are set, replaced and removed', () => {
  const nd = new Map<number, Nd6>();
  const x = Uint8Array.from([0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
  const y = Uint8Array.from([0x20, 0x01, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
  ndSet(nd, x, 1);
  ndSet(nd, y, 2);
  assert.equal(nd.size, 1, 'one key: the same last word');
  assert.equal(ndGet(nd, x, 0), 1);
  assert.equal(ndGet(nd, y, 0), 2);
  ndSet(nd, x, 3);
  assert.equal(ndGet(nd, x, 0), 3);
  ndSet(nd, x, -1);
  assert.equal(ndGet(nd, x, 0), -1);
  assert.equal(ndGet(nd, y, 0), 2);
  ndSet(nd, y, -1);
  assert.equal(nd.size, 0);
});

test('anti-spoofing: VLAN-tagged frames from an endpoint are dropped unless its network allows tags', () => {
  const tagged = (tpid: number) => {
    const f = ipv4Frame(MAC_B, MAC_A, { size: 100 });
    const t = new Uint8Array(f.length + 4);
    t.set(f.subarray(0, 12), 0);
    t[12] = tpid >> 8;
    t[13] = tpid & 0xff;
    t[14] = 0;
    t[15] = 42; // VID 42
    t.set(f.subarray(12), 16);
    return t;
  };
  const d = setup({ ip: true });
  d.fromTap(d.a, tagged(0x8100), tagged(0x88a8));
  assert.equal(d.dp.counters.tx_vlan_tagged, 2, '802.1Q and 802.1ad (QinQ)');
  assert.equal(d.io.tapOut.get(d.b.fd)!.length, 0);
  const allowed = setup({ ip: true, allowTagged: true });
  allowed.fromTap(allowed.a, tagged(0x8100));
  assert.equal(allowed.dp.counters.tx_vlan_tagged, 0);
  assert.equal(allowed.io.tapOut.get(allowed.b.fd)!.length, 1, 'allowed: forwarded as it came');
});

test('storm control: flooding is bounded per endpoint (token bucket); known unicast is not', () => {
  const { io, dp, a, b, fdb, fromTap, tick } = setup({ ip: true, storm: [100, 50] });
  const bcast = () => arpRequest(MAC_A, IP_A, 0xc6130177); // for an address nobody holds: flooded
  fromTap(a, ...Array.from({ length: 60 }, bcast)); // one readiness callback drains up to 64
  assert.equal(dp.counters.tx_storm_dropped, 10, 'the burst (50) passes, the rest is dropped');
  assert.equal(io.tapOut.get(b.fd)!.length, 50);
  fromTap(a, ...Array.from({ length: 20 }, () => ipv4Frame(0x02000000ffff, MAC_A, { srcIp: IP_A }))); // unknown unicast
  assert.equal(dp.counters.tx_storm_dropped, 30, 'unknown unicast floods too, so it counts');
  fdb.set(VNI, MAC_R, 'kv', { vtep: PEER, port: 4789 });
  io.sent.length = 0;
  fromTap(a, ...Array.from({ length: 30 }, () => ipv4Frame(MAC_R, MAC_A, { srcIp: IP_A })));
  assert.equal(io.sent.length, 30, 'known unicast is never limited');
  tick(300); // 30 tokens come back
  fromTap(a, ...Array.from({ length: 40 }, bcast));
  assert.equal(dp.counters.tx_storm_dropped, 40, '30 of 40 pass after 300 ms at 100/s');
  const off = setup({ ip: true, storm: [0, 1] });
  off.fromTap(off.a, ...Array.from({ length: 60 }, bcast));
  assert.equal(off.dp.counters.tx_storm_dropped, 0, 'stormPps 0: off');
});

test('rcv: a frame that is dropped teaches nothing; a delivered one teaches its source', () => {
  const { dp, fdb, fromWire } = setup();
  const X = 0x020000000c01;
  fdb.floodAdd(VNI, PEER, 4789, 'kv');
  fromWire(PEER, vxlanDatagram(VNI, ipv4Frame(0x02000000ffff, X))); // unicast to nobody here
  assert.equal(dp.counters.rx_no_local_dst, 1);
  assert.equal(fdb.vnet(VNI).entries.get(X), undefined, 'not learned from a dropped frame');
  fromWire(PEER, vxlanDatagram(VNI, ipv4Frame(MAC_A, X)));
  assert.equal(fdb.vnet(VNI).entries.get(X)?.vtep, PEER, 'learned from a delivered one');
});

test('MTU: an oversize DF packet gets ICMP fragmentation-needed back with the MTU; others are dropped', () => {
  const { io, dp, a, fromTap, fdb } = setup({ ip: true, mtu: 1450 });
  fdb.set(VNI, MAC_R, 'kv', { vtep: PEER, port: 4789 });
  const big = ipv4Frame(MAC_R, MAC_A, {
    size: 14 + 2000,
    srcIp: IP_A,
    dstIp: 0xc6130114,
    proto: 17,
    sport: 5000,
    dport: 6000,
  });
  big[14 + 6] = 0x40; // DF
  const orig = Uint8Array.from(big);
  fromTap(a, big, ipv4Frame(MAC_R, MAC_A, { size: 14 + 1450, srcIp: IP_A }));
  assert.equal(dp.counters.tx_oversize, 1);
  assert.equal(io.sent.length, 1, 'the 1450-byte packet (exactly the MTU) still goes out');
  const [icmp] = io.tapOut.get(a.fd)!;
  assert.ok(icmp, 'an ICMP error came back to the sender');
  const h = Buffer.from(icmp);
  assert.equal(h.readUIntBE(0, 6), MAC_A, 'to the sender');
  assert.equal(h.readUIntBE(6, 6), MAC_R, 'from the MAC it sent to');
  assert.equal(h.readUInt16BE(12), 0x0800);
  assert.equal(h[14 + 9], 1, 'ICMP');
  assert.equal(h.readUInt32BE(14 + 12), 0xc6130114, 'from the original destination');
  assert.equal(h.readUInt32BE(14 + 16), IP_A, 'to the original source');
  assert.equal(internetChecksum(icmp, 14, 34), 0, 'IP header checksum valid');
  assert.deepEqual([h[34], h[35]], [3, 4], 'type 3 code 4: fragmentation needed');
  assert.equal(h.readUInt16BE(34 + 6), 1450, 'next-hop MTU');
  assert.equal(internetChecksum(icmp, 34, icmp.length), 0, 'ICMP checksum valid');
  assert.deepEqual(icmp.subarray(42), orig.subarray(14, 14 + 28), 'quotes the original IP header + 8 bytes');
  assert.equal(icmp.length, 14 + 20 + 8 + 28);
  assert.equal(dp.counters.icmp_frag_needed, 1);
  const nodf = ipv4Frame(MAC_R, MAC_A, { size: 14 + 2000, srcIp: IP_A });
  fromTap(a, nodf);
  assert.equal(dp.counters.tx_oversize, 2);
  assert.equal(io.tapOut.get(a.fd)!.length, 1, 'no ICMP for a packet without DF');
});

test('MTU: an oversize IPv6 packet gets ICMPv6 packet-too-big back with the MTU, quoting up to 1232 bytes; never for an ICMPv6 error or from ::', async () => {
  const { pseudoSumV6 } = await import('../../src/vxlan/checksum.js');
  const { io, dp, a, fromTap, fdb } = setup({ ip: true, mtu: 1450 });
  fdb.set(VNI, MAC_R, 'kv', { vtep: PEER, port: 4789 });
  const SRC = Uint8Array.from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a, 0x01]);
  const DST = Uint8Array.from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0b, 0x01]);
  /** Ethernet + IPv6 (next header `nh`) + payload of `plen` bytes (its first byte `first`), from a to MAC_R. */
  const v6 = (plen: number, o: { nh?: number; first?: number; src?: Uint8Array } = {}) => {
    const f = new Uint8Array(14 + 40 + plen).map((_, i) => (i * 7) & 0xff);
    f.set(macBytes(MAC_R), 0);
    f.set(macBytes(MAC_A), 6);
    f[12] = 0x86;
    f[13] = 0xdd;
    f.set([0x60, 0, 0, 0, plen >> 8, plen & 0xff, o.nh ?? 17, 64], 14);
    f.set(o.src ?? SRC, 22);
    f.set(DST, 38);
    if (o.first !== undefined) f[54] = o.first;
    return f;
  };
  const check = (w: Uint8Array, orig: Uint8Array) => {
    const h = Buffer.from(w);
    assert.equal(h.readUIntBE(0, 6), MAC_A, 'to the sender');
    assert.equal(h.readUIntBE(6, 6), MAC_R, 'from the MAC it sent to');
    assert.equal(h.readUInt16BE(12), 0x86dd);
    assert.equal(h[14] >> 4, 6);
    assert.equal(h[20], 58, 'ICMPv6');
    assert.deepEqual(w.subarray(22, 38), DST, 'from the original destination');
    assert.deepEqual(w.subarray(38, 54), SRC, 'to the original source');
    const plen = h.readUInt16BE(18);
    assert.equal(w.length, 54 + plen);
    assert.ok(40 + plen <= 1280, 'fits the minimum IPv6 MTU');
    assert.deepEqual([h[54], h[55]], [2, 0], 'type 2: packet too big');
    assert.equal(h.readUInt32BE(58), 1450, 'MTU');
    assert.equal(finish(sum16(w, 54, w.length, pseudoSumV6(DST, SRC, 58, plen))), 0, 'ICMPv6 checksum valid');
    assert.deepEqual(w.subarray(62), orig.subarray(14, 14 + plen - 8), 'quotes the packet from its IPv6 header');
  };
  const big = v6(2000);
  const orig = Uint8Array.from(big);
  fromTap(a, big, v6(1450 - 40));
  assert.equal(dp.counters.tx_oversize, 1);
  assert.equal(io.sent.length, 1, 'the packet of exactly the MTU still goes out');
  const out = io.tapOut.get(a.fd)!;
  assert.equal(out.length, 1);
  check(out[0], orig);
  // the quote is capped at 1232 bytes (an overlay MTU is at least IPv6's 1280, so every oversize packet is longer)
  assert.equal(out[0].length, 14 + 40 + 8 + 1232, 'quote capped at 1232 bytes');
  // an oversize ICMPv6 error (type 1, destination unreachable) and a packet from :: get nothing back
  fromTap(a, v6(2000, { nh: 58, first: 1 }), v6(2000, { src: new Uint8Array(16) }));
  assert.equal(out.length, 1);
  // an oversize echo request (type 128) is not an error: it gets one
  const echo = v6(3000, { nh: 58, first: 128 });
  const echoOrig = Uint8Array.from(echo);
  fromTap(a, echo);
  assert.equal(out.length, 2);
  check(out[1], echoOrig);
  assert.equal(dp.counters.tx_oversize, 4);
  assert.equal(dp.counters.icmp6_packet_too_big, 2);
});

/** A data plane with offloads and two vnet-header endpoints a and b (a's TAP takes USO if `uso`; b's never), and a
 * remote MAC behind PEER. */
function offloadSetup(o: { batch?: number; udpGro?: boolean; uso?: boolean } = {}) {
  const io = new FakeIo();
  const fdb = new Fdb<Port>();
  const udpFd = io.udp();
  const dp = new Dataplane({
    io,
    fdb,
    udpFd,
    txFds: [io.udp()],
    vxlanPort: 4789,
    batch: o.batch ?? 8,
    offload: true,
    udpGro: o.udpGro,
  });
  dp.addVni(VNI, true);
  dp.start();
  const a = dp.addPort({
    id: 'a',
    mac: MAC_A,
    vni: VNI,
    fd: io.tap(),
    ifname: 'eth0',
    ip: IP_A,
    mtu: 1450,
    vnetHdr: true,
    uso: o.uso,
  });
  const b = dp.addPort({
    id: 'b',
    mac: MAC_B,
    vni: VNI,
    fd: io.tap(),
    ifname: 'eth0',
    ip: IP_B,
    mtu: 1450,
    vnetHdr: true,
  });
  fdb.set(VNI, MAC_R, 'kv', { vtep: PEER, port: 4789 });
  return { io, fdb, dp, udpFd, a, b };
}

/** A TCP/IPv4 super-frame from endpoint a as its TAP hands it over: virtio-net header (gso_size 1398) + frame. */
function tsoFrame(
  payload: Uint8Array,
  dst: number,
  o: { gsoType?: number; flags?: number; tos?: number } = {},
): Uint8Array {
  return tcpSuperFrame(payload, { dstMac: dst, srcMac: MAC_A, src: IP_A, dst: 0xc6130114, gsoSize: 1398, ...o });
}

test('offloads: a TSO super-frame goes to a VTEP as UDP GSO sends of valid VXLAN datagrams, and to a local endpoint whole', () => {
  const { io, dp, udpFd, a, b } = offloadSetup();
  // a 60000-byte TCP super-frame as the TAP hands it over: virtio-net header (TCPV4, gso_size 1398) + frame
  const payload = new Uint8Array(60000).map((_, i) => (i * 7) & 0xff);
  const mk = (dst: number) => tsoFrame(payload, dst);
  io.tapIn.get(a.fd)!.push(mk(MAC_R), mk(MAC_B));
  io.ready(a.fd);
  const segs = Math.ceil(60000 / 1398);
  assert.equal(dp.counters.tx_gso_frames, 2);
  assert.equal(dp.counters.tx_gso_segments, segs);
  const got: Uint8Array[] = [];
  for (const d of io.sent) {
    assert.equal(d.addr, PEER);
    const stride = d.gso || d.data.length;
    for (let o = 0; o < d.data.length; o += stride) {
      const dg = d.data.subarray(o, Math.min(d.data.length, o + stride));
      assert.equal(readVni(dg, 0), VNI);
      const e = ethernet.decode(dg, 8);
      const ip = ipv4.decode(e.payload, 0);
      assert.equal(internetChecksum(e.payload, 0, 20), 0);
      assert.ok(dg.length - 8 <= 1450 + 14, 'every datagram fits the overlay MTU');
      const seg = ip.payload;
      assert.equal(
        finish(sum16(seg, 0, seg.length, pseudoSumV4(ip.src, ip.dst, 6, seg.length))),
        0,
        'TCP checksum of each segment',
      );
      got.push(tcp.decode(seg, 0).payload);
    }
  }
  assert.equal(got.length, segs);
  assert.deepEqual(Buffer.concat(got), Buffer.from(payload));
  assert.ok(io.sent.length <= 2, `${io.sent.length} GSO sends (at most 64 segments / 65507 bytes each)`);
  const [whole] = io.tapOut.get(b.fd)!;
  assert.equal(whole.length, 10 + 14 + 40 + 60000, 'the local endpoint got the super-frame whole');
  assert.equal(whole[1], 1, 'with its virtio-net header (GSO TCPV4)');
  // frames from the wire to a vnet-header port get a zero header in front
  io.udpIn.get(udpFd)!.push({ data: vxlanDatagram(VNI, ipv4Frame(MAC_A, MAC_R)), addr: PEER, port: 50000 });
  io.ready(udpFd);
  const [fromWire] = io.tapOut.get(a.fd)!;
  assert.deepEqual([...fromWire.subarray(0, 10)], new Array(10).fill(0));
  assert.equal(fromWire.length, 10 + 98);
});

test('offloads: a TSO super-frame flagged ECN (CWR set) is cut with CWR on the first segment only, and goes whole, flag and all, to a local endpoint', () => {
  const { io, dp, a, b } = offloadSetup();
  const payload = new Uint8Array(20000).map((_, i) => (i * 3) & 0xff);
  const mk = (dst: number, gsoType: number) => tsoFrame(payload, dst, { gsoType, flags: 0x80 | 0x18, tos: 2 });
  // TCPV4 | ECN to a VTEP and to a local endpoint; UDP_L4 | ECN is not a thing the kernel sends, and is refused
  io.tapIn.get(a.fd)!.push(mk(MAC_R, 0x81), mk(MAC_B, 0x81), mk(MAC_R, 0x85));
  io.ready(a.fd);
  const c = dp.counters;
  assert.equal(c.tx_gso_frames, 2);
  assert.equal(c.tx_gso_ecn, 2);
  assert.equal(c.tx_bad_offload, 1, 'UDP_L4 with the ECN bit refused');
  const flags: number[] = [];
  const got: Uint8Array[] = [];
  for (const d of io.sent) {
    const stride = d.gso || d.data.length;
    for (let o = 0; o < d.data.length; o += stride) {
      const ip = ipv4.decode(ethernet.decode(d.data.subarray(o, Math.min(d.data.length, o + stride)), 8).payload, 0);
      assert.equal(
        finish(sum16(ip.payload, 0, ip.payload.length, pseudoSumV4(ip.src, ip.dst, 6, ip.payload.length))),
        0,
        'TCP checksum of each segment',
      );
      const t = tcp.decode(ip.payload, 0);
      flags.push(t.flags);
      got.push(t.payload);
    }
  }
  const n = Math.ceil(20000 / 1398);
  assert.deepEqual(
    flags,
    Array.from({ length: n }, (_, k) => 0x10 | (k === 0 ? 0x80 : 0) | (k === n - 1 ? 0x08 : 0)),
    'CWR on the first segment, PSH on the last',
  );
  assert.deepEqual(Buffer.concat(got), Buffer.from(payload));
  const [whole] = io.tapOut.get(b.fd)!;
  assert.equal(whole[1], 0x81, 'the local endpoint gets the GSO type with its ECN flag');
  assert.equal(whole.length, 10 + 14 + 40 + 20000);
});

test('GRO: in-order segments of one flow become one GSO super-frame; gaps, other flows and bad checksums do not merge', () => {
  const { io, dp, udpFd, a } = offloadSetup({ batch: 64, udpGro: true });
  const MSS = 1398;
  const seg = (seq: number, plen: number, opts: { flags?: number; sport?: number; badCsum?: boolean } = {}) => {
    const payload = new Uint8Array(plen).map((_, i) => (seq + i) & 0xff);
    const t = new Uint8Array(32 + plen);
    const tsopt = new Uint8Array([1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 8]);
    tcp.encode(
      {
        sport: opts.sport ?? 5201,
        dport: 40000,
        seq,
        ack: 5,
        flags: opts.flags ?? 0x10,
        window: 300,
        checksum: 0,
        urgent: 0,
        options: tsopt,
        payload,
      },
      t,
      0,
    );
    const c = finish(sum16(t, 0, t.length, pseudoSumV4(0xc6130114, IP_A, 6, t.length)));
    t[16] = c >> 8;
    t[17] = (c & 0xff) ^ (opts.badCsum ? 1 : 0);
    const ip = new Uint8Array(20 + t.length);
    ipv4.encode(
      {
        tos: 0,
        id: seq & 0xffff,
        df: true,
        mf: false,
        fragOffset: 0,
        ttl: 64,
        proto: 6,
        checksum: 0,
        src: 0xc6130114,
        dst: IP_A,
        options: new Uint8Array(0),
        payload: t,
      },
      ip,
      0,
    );
    const f = new Uint8Array(14 + ip.length);
    f.set(macBytes(MAC_A), 0);
    f.set(macBytes(MAC_R), 6);
    f[12] = 0x08;
    f.set(ip, 14);
    return vxlanDatagram(VNI, f);
  };
  // 10 full segments in one UDP-GRO buffer + a short last one with PSH, then unrelated traffic
  const full = Array.from({ length: 10 }, (_, k) => seg(1000 + k * MSS, MSS));
  const coalesced = Buffer.concat(full);
  const input = [
    { data: new Uint8Array(coalesced), addr: PEER, port: 50000, gso: full[0].length },
    { data: seg(1000 + 10 * MSS, 500, { flags: 0x18 }), addr: PEER, port: 50000 },
    { data: seg(900000, MSS), addr: PEER, port: 50000 }, // a gap: starts a new run
    { data: seg(900000 + MSS, MSS, { sport: 1 }), addr: PEER, port: 50000 }, // another flow
    { data: seg(900000 + MSS, MSS, { badCsum: true }), addr: PEER, port: 50000 }, // bad checksum: never merged
  ];
  io.udpIn.get(udpFd)!.push(...input);
  io.ready(udpFd);
  const c = dp.counters;
  assert.equal(c.rx_gro_buffers, 1, 'the coalesced buffer was split');
  assert.equal(c.rx_datagrams, 14);
  assert.equal(c.rx_gro_frames, 1);
  assert.equal(c.rx_gro_segments, 11);
  assert.equal(c.rx_gro_bad_csum, 1);
  const out = io.tapOut.get(a.fd)!;
  assert.equal(out.length, 4, 'one super-frame, then the gap, the other flow and the bad one, in order');
  const sf = out[0];
  assert.deepEqual([sf[0], sf[1]], [1, 1], 'NEEDS_CSUM, GSO TCPV4');
  assert.equal(sf[4] | (sf[5] << 8), MSS, 'gso_size = MSS');
  assert.equal(sf[6] | (sf[7] << 8), 34, 'csum_start = TCP header');
  assert.equal(sf[8] | (sf[9] << 8), 16, 'csum_offset');
  const e = ethernet.decode(sf, 10);
  const ip = ipv4.decode(e.payload, 0);
  assert.equal(internetChecksum(e.payload, 0, 20), 0, 'IPv4 header checksum');
  const t = tcp.decode(ip.payload, 0);
  assert.equal(t.seq, 1000);
  assert.equal(t.payload.length, 10 * MSS + 500);
  assert.ok(t.flags & 0x08, 'PSH of the last segment kept');
  assert.deepEqual(
    [...t.payload],
    Array.from({ length: 10 * MSS + 500 }, (_, i) => (1000 + i) & 0xff),
    'payload in order',
  );
  assert.equal(
    t.checksum,
    pseudoSumV4(0xc6130114, IP_A, 6, ip.payload.length),
    'checksum field = pseudo-header sum (partial)',
  );
  for (const f of out.slice(1))
    assert.deepEqual([...f.subarray(0, 10)], new Array(10).fill(0), 'single segments go as they came');
});

test('UDP GRO: equal-sized datagrams of one flow become one UDP_L4 super-frame that cuts back into exactly the datagrams sent; at most 64 per frame; no checksum, a bad checksum or another flow do not merge', async () => {
  const { segmentSuperFrame } = await import('../../src/vxlan/gso.js');
  const { sampleUdpFrame } = await import('../../src/vxlan/samples.js');
  // b's TAP stands for one whose kernel refused USO (before Linux 6.2), which refuses UDP_L4 super-frames too:
  // nothing is merged for it
  const { io, dp, udpFd, a, b } = offloadSetup({ batch: 64, udpGro: true, uso: true });
  /** What a USO sender's agent puts on the wire: a super-datagram of `payload` bytes cut into `seg`-byte datagrams. */
  const sent = (payload: number, seg: number, o: { v6?: boolean; seed?: number; to?: number } = {}): Uint8Array[] => {
    const sf = sampleUdpFrame(payload, { v6: o.v6, seed: o.seed ?? 3 });
    sf.set(macBytes(o.to ?? MAC_A), 0);
    sf.set(macBytes(MAC_R), 6);
    const dst = new Uint8Array(sf.length * 2);
    const r = segmentSuperFrame(sf, 0, sf.length, seg, dst, 0, 0)!;
    return Array.from({ length: r.count }, (_, k) => dst.slice(k * r.stride, Math.min(r.total, (k + 1) * r.stride)));
  };
  const buffer = (frames: Uint8Array[]) => {
    const ds = frames.map((f) => vxlanDatagram(VNI, f));
    return { data: new Uint8Array(Buffer.concat(ds)), addr: PEER, port: 50000, gso: ds[0].length };
  };
  const d40 = sent(39 * 1200 + 700, 1200); // 40 datagrams, the last 700 bytes
  const d70 = sent(70 * 500, 500, { seed: 4 }); // another flow (other source port): 70 datagrams of 500
  const v6 = sent(10 * 1000, 1000, { v6: true });
  const noCsum = sent(2 * 600, 600, { seed: 5 });
  for (const f of noCsum) f[34 + 6] = f[34 + 7] = 0; // IPv4 UDP without a checksum
  const bad = sent(2 * 600, 600, { seed: 6 });
  bad[1][60] ^= 1; // the second one's payload corrupted
  const toB = sent(10 * 1000, 1000, { to: MAC_B });
  io.udpIn
    .get(udpFd)!
    .push(
      buffer(d40),
      buffer(d70.slice(0, 40)),
      buffer(d70.slice(40)),
      buffer(v6),
      buffer(noCsum),
      buffer(bad),
      buffer(toB),
    );
  io.ready(udpFd);
  const c = dp.counters;
  const out = io.tapOut.get(a.fd)!;
  // d40 -> 1; d70 -> 64 + 6; v6 -> 1; noCsum -> 2 as they came; bad -> the first alone (written as it came once the
  // second fails), then the bad one
  assert.equal(out.length, 1 + 2 + 1 + 2 + 2, `frames written: ${out.map((f) => f[1]).join(',')}`);
  assert.equal(c.rx_gro_udp_frames, 4);
  assert.equal(c.rx_gro_frames, 4);
  assert.equal(c.rx_gro_segments, 40 + 64 + 6 + 10);
  assert.equal(c.rx_gro_bad_csum, 1);
  /** Cuts a written super-frame the way the receiving stack does (here: our own split, which computes every field). */
  const recut = (w: Uint8Array): Uint8Array[] => {
    assert.equal(w[0], 1, 'NEEDS_CSUM');
    assert.equal(w[1], 5, 'GSO UDP_L4');
    const l4 = w[10 + 12] === 0x86 ? 54 : 34;
    assert.equal(w[2] | (w[3] << 8), l4 + 8, 'hdr_len');
    assert.equal(w[6] | (w[7] << 8), l4, 'csum_start = UDP header');
    assert.equal(w[8] | (w[9] << 8), 6, 'csum_offset');
    const f = w.subarray(10);
    const udpLen = (f[l4 + 4] << 8) | f[l4 + 5];
    assert.equal(udpLen, f.length - l4, 'UDP length spans the super-frame');
    if (l4 === 34) {
      assert.equal(internetChecksum(f, 14, 34), 0, 'IPv4 header checksum');
      assert.equal((f[16] << 8) | f[17], f.length - 14, 'IPv4 total length');
      const src = ((f[26] << 24) | (f[27] << 16) | (f[28] << 8) | f[29]) >>> 0;
      const dst = ((f[30] << 24) | (f[31] << 16) | (f[32] << 8) | f[33]) >>> 0;
      assert.equal(
        (f[l4 + 6] << 8) | f[l4 + 7],
        pseudoSumV4(src, dst, 17, udpLen),
        'checksum field = pseudo-header sum (partial)',
      );
    } else assert.equal((f[18] << 8) | f[19], f.length - 54, 'IPv6 payload length');
    const mss = w[4] | (w[5] << 8);
    const dst = new Uint8Array(f.length * 2);
    const r = segmentSuperFrame(f, 0, f.length, mss, dst, 0, 0)!;
    return Array.from({ length: r.count }, (_, k) => dst.slice(k * r.stride, Math.min(r.total, (k + 1) * r.stride)));
  };
  const same = (got: Uint8Array[], want: Uint8Array[], what: string) => {
    assert.equal(got.length, want.length, `${what}: datagrams`);
    for (let k = 0; k < want.length; k++)
      assert.deepEqual(Buffer.from(got[k]), Buffer.from(want[k]), `${what}: datagram ${k} byte-identical`);
  };
  same(recut(out[0]), d40, '40 datagrams');
  assert.equal(out[0][4] | (out[0][5] << 8), 1200, 'gso_size');
  same([...recut(out[1]), ...recut(out[2])], d70, '70 datagrams in two frames');
  assert.equal(recut(out[1]).length, 64, 'at most 64 datagrams per frame');
  same(recut(out[3]), v6, 'IPv6');
  for (const [k, w] of out.slice(4).entries())
    assert.deepEqual([...w.subarray(0, 10)], new Array(10).fill(0), `frame ${4 + k} written as it came`);
  assert.deepEqual(Buffer.from(out[4].subarray(10)), Buffer.from(noCsum[0]));
  assert.deepEqual(Buffer.from(out[7].subarray(10)), Buffer.from(bad[1]), 'the corrupted datagram last, as it came');
  const outB = io.tapOut.get(b.fd)!;
  assert.equal(outB.length, 10, 'no USO on that TAP: its datagrams written one by one');
  for (const [k, w] of outB.entries()) assert.deepEqual(Buffer.from(w.subarray(10)), Buffer.from(toB[k]));
});

test('offloads over IPv6: a TSO6 super-frame is cut into valid segments for a VTEP, and segments from the wire merge into a TCPV6 super-frame', async () => {
  const { ipv6 } = await import('../../src/vxlan/ipv6.js');
  const { pseudoSumV6 } = await import('../../src/vxlan/checksum.js');
  const io = new FakeIo();
  const fdb = new Fdb<Port>();
  const udpFd = io.udp();
  const dp = new Dataplane({
    io,
    fdb,
    udpFd,
    txFds: [io.udp()],
    vxlanPort: 4789,
    batch: 64,
    offload: true,
    udpGro: true,
  });
  dp.addVni(VNI, true);
  dp.start();
  const a = dp.addPort({
    id: 'a',
    mac: MAC_A,
    vni: VNI,
    fd: io.tap(),
    ifname: 'eth0',
    ip: IP_A,
    mtu: 1450,
    vnetHdr: true,
  });
  fdb.set(VNI, MAC_R, 'kv', { vtep: PEER, port: 4789 });
  const LL_A = Uint8Array.from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0a, 0x01]);
  const LL_R = Uint8Array.from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x0b, 0x01]);
  const MSS = 1378; // 1450 - 40 - 32
  const tsopt = new Uint8Array([1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 8]);
  /** Ethernet + IPv6 + TCP (timestamps) with a correct checksum. */
  const frame = (
    src: Uint8Array,
    dst: Uint8Array,
    smac: number,
    dmac: number,
    seq: number,
    payload: Uint8Array,
    flags: number,
    sport = 40000,
  ) => {
    const t = new Uint8Array(32 + payload.length);
    tcp.encode(
      { sport, dport: 5201, seq, ack: 5, flags, window: 300, checksum: 0, urgent: 0, options: tsopt, payload },
      t,
      0,
    );
    const c = finish(sum16(t, 0, t.length, pseudoSumV6(src, dst, 6, t.length)));
    t[16] = c >> 8;
    t[17] = c & 0xff;
    const ip = new Uint8Array(40 + t.length);
    ipv6.encode({ trafficClass: 0, flowLabel: 0x12345, nextHeader: 6, hopLimit: 64, src, dst, payload: t }, ip, 0);
    const f = new Uint8Array(14 + ip.length);
    f.set(macBytes(dmac), 0);
    f.set(macBytes(smac), 6);
    f[12] = 0x86;
    f[13] = 0xdd;
    f.set(ip, 14);
    return f;
  };
  // transmit: a 50000-byte super-frame behind a virtio-net header (GSO TCPV6 = 4, gso_size MSS)
  const payload = new Uint8Array(50000).map((_, i) => (i * 13) & 0xff);
  const sf = frame(LL_A, LL_R, MAC_A, MAC_R, 0xfffff000, payload, 0x18);
  const withHdr = new Uint8Array(10 + sf.length);
  withHdr[1] = 4;
  withHdr[4] = MSS & 0xff;
  withHdr[5] = MSS >> 8;
  withHdr.set(sf, 10);
  io.tapIn.get(a.fd)!.push(withHdr);
  io.ready(a.fd);
  const c = dp.counters;
  assert.equal(c.tx_bad_offload, 0);
  assert.equal(c.tx_gso_frames, 1);
  assert.equal(c.tx_gso_segments, Math.ceil(50000 / MSS));
  const got: Uint8Array[] = [];
  for (const d of io.sent) {
    const stride = d.gso || d.data.length;
    for (let o = 0; o < d.data.length; o += stride) {
      const dg = d.data.subarray(o, Math.min(d.data.length, o + stride));
      const e = ethernet.decode(dg, 8);
      assert.equal(e.etherType, 0x86dd);
      const ip = ipv6.decode(e.payload, 0);
      assert.ok(dg.length - 8 <= 1450 + 14, 'every datagram fits the overlay MTU');
      assert.equal(
        finish(sum16(ip.payload, 0, ip.payload.length, pseudoSumV6(ip.src, ip.dst, 6, ip.payload.length))),
        0,
        'TCP checksum of each segment',
      );
      got.push(tcp.decode(ip.payload, 0).payload);
    }
  }
  assert.deepEqual(Buffer.concat(got), Buffer.from(payload), 'the payload, in order');
  // receive: 12 segments of one flow in one UDP GRO buffer (the last with PSH), then a segment of another flow
  const segs = Array.from({ length: 12 }, (_, k) =>
    vxlanDatagram(
      VNI,
      frame(LL_R, LL_A, MAC_R, MAC_A, 7000 + k * MSS, new Uint8Array(MSS).fill(k), k === 11 ? 0x18 : 0x10),
    ),
  );
  io.udpIn.get(udpFd)!.push(
    { data: new Uint8Array(Buffer.concat(segs.slice(0, 6))), addr: PEER, port: 50000, gso: segs[0].length },
    { data: new Uint8Array(Buffer.concat(segs.slice(6))), addr: PEER, port: 50000, gso: segs[0].length },
    {
      data: vxlanDatagram(VNI, frame(LL_R, LL_A, MAC_R, MAC_A, 7000 + 12 * MSS, new Uint8Array(100), 0x10, 1)),
      addr: PEER,
      port: 50000,
    },
  );
  io.ready(udpFd);
  assert.equal(c.rx_gro_frames, 1);
  assert.equal(c.rx_gro_segments, 12);
  const out = io.tapOut.get(a.fd)!;
  assert.equal(out.length, 2, 'one super-frame, then the other flow');
  const m = out[0];
  assert.deepEqual([m[0], m[1]], [1, 4], 'NEEDS_CSUM, GSO TCPV6');
  assert.equal(m[4] | (m[5] << 8), MSS, 'gso_size = MSS');
  assert.equal(m[6] | (m[7] << 8), 54, 'csum_start = TCP header after the IPv6 header');
  assert.equal(m[8] | (m[9] << 8), 16, 'csum_offset');
  const ip = ipv6.decode(ethernet.decode(m, 10).payload, 0);
  assert.equal(ip.payload.length, 32 + 12 * MSS, 'IPv6 payload length of the whole');
  assert.equal(ip.flowLabel, 0x12345);
  const t = tcp.decode(ip.payload, 0);
  assert.equal(t.seq, 7000);
  assert.ok(t.flags & 0x08, 'PSH of the last segment kept');
  assert.deepEqual(
    [...t.payload],
    Array.from({ length: 12 * MSS }, (_, i) => Math.floor(i / MSS)),
    'payload in order',
  );
  assert.equal(
    t.checksum,
    pseudoSumV6(ip.src, ip.dst, 6, ip.payload.length),
    'checksum field = pseudo-header sum (partial)',
  );
  assert.deepEqual([...out[1].subarray(0, 10)], new Array(10).fill(0), 'the other flow goes as it came');
});

test('counters users read first: tx_no_destination, tx_tap_error, rx_tap_error, rx_learn_full', () => {
  // a broadcast with nobody to send it to: no other local port, no flood entry
  {
    const { dp, fdb, a, fromTap, io } = setup();
    dp.removePort('b');
    fdb.floodDel(VNI, PEER, 4789);
    fdb.floodDel(VNI, PEER3, 4789);
    fromTap(a, ipv4Frame(BCAST, MAC_A, { size: 100 }));
    assert.equal(dp.counters.tx_no_destination, 1);
    assert.equal(io.sent.length, 0);
  }
  // a local delivery whose TAP write fails: counted on the sending side, the other traffic goes on
  {
    const { dp, a, b, fromTap, io, fromWire } = setup();
    io.failTapWrites.add(b.fd);
    fromTap(a, ipv4Frame(MAC_B, MAC_A, { size: 100 }));
    assert.equal(dp.counters.tx_tap_error, 1, 'a -> b local write failed');
    // and from the wire to b: the receive side's counter
    fromWire(PEER, vxlanDatagram(VNI, ipv4Frame(MAC_B, MAC_R, { size: 100 })));
    assert.equal(dp.counters.rx_tap_error, 1, 'wire -> b write failed');
    io.failTapWrites.delete(b.fd);
    fromWire(PEER, vxlanDatagram(VNI, ipv4Frame(MAC_B, MAC_R, { size: 100 })));
    assert.equal(io.tapOut.get(b.fd)!.length, 1, 'b receives again once its TAP takes frames');
  }
  // learning full: the frame is still delivered, the MAC is not learned, the counter says why
  {
    const { dp, a, io, fromWire, fdb } = setup({ maxLearned: 2 });
    for (let i = 0; i < 3; i++) fromWire(PEER, vxlanDatagram(VNI, ipv4Frame(MAC_A, MAC_R + i, { size: 100 })));
    assert.equal(io.tapOut.get(a.fd)!.length, 3, 'all three delivered');
    assert.equal(fdb.vnet(VNI).learned, 2);
    assert.equal(dp.counters.rx_learn_full, 1);
  }
});
