/**
 * Time-bounded mutation fuzzing of the codec and of the forwarding loop (both directions), seeded with valid
 * packets of every kind the hot path treats specially (ARP requests it may answer, oversize DF packets it answers
 * with ICMP, tagged frames, VXLAN datagrams). Mutations: byte flips, truncation, extension, splices of two seeds.
 * Nothing may throw out of the loop, every reply it generates must stay inside its slot, and learning stays bounded.
 * VXTAP_FUZZ_SECONDS (default 3) sets the budget per target; e.g. VXTAP_FUZZ_SECONDS=600 for a long run.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  arp,
  DecodeError,
  ethernet,
  ipv4,
  ipv6,
  tcp,
  udp,
  vxlan,
  flowHash,
  finish,
  sum16,
  pseudoSumV4,
  pseudoSumV6,
  type Codec,
} from '../../src/vxlan/index.js';
import { Dataplane } from '../../src/dataplane/dataplane.js';
import { Fdb } from '../../src/fdb/fdb.js';
import type { Port } from '../../src/dataplane/port.js';
import { FakeIo } from '../helpers/fakeio.js';
import { arpRequest, ipv4Frame, vxlanDatagram } from '../helpers/frames.js';

const SECONDS = Number(process.env.VXTAP_FUZZ_SECONDS ?? 3);

function mutate(seeds: Uint8Array[]): Uint8Array {
  const a = seeds[Math.floor(Math.random() * seeds.length)];
  let b: Uint8Array = Uint8Array.from(a);
  switch (Math.floor(Math.random() * 5)) {
    case 0: // flips
      for (let k = 1 + Math.floor(Math.random() * 6); k > 0 && b.length; k--)
        b[Math.floor(Math.random() * b.length)] = Math.floor(Math.random() * 256);
      break;
    case 1: // truncate
      b = b.subarray(0, Math.floor(Math.random() * (b.length + 1)));
      break;
    case 2: {
      // extend
      const c = new Uint8Array(b.length + 1 + Math.floor(Math.random() * 3000));
      c.set(b);
      c.set(randomBytes(c.length - b.length), b.length);
      b = c;
      break;
    }
    case 3: {
      // splice
      const o = seeds[Math.floor(Math.random() * seeds.length)];
      const cut = Math.floor(Math.random() * b.length);
      const c = new Uint8Array(cut + o.length);
      c.set(b.subarray(0, cut));
      c.set(o, cut);
      b = c;
      break;
    }
    default:
      b = randomBytes(Math.floor(Math.random() * 200));
  }
  return b;
}

test(`fuzz the codec for ${SECONDS} s: decode returns or throws DecodeError, never anything else`, () => {
  const seeds: [string, Codec<object>, Uint8Array][] = [];
  const enc = <T extends object>(name: string, c: Codec<T>, v: T) => {
    const b = new Uint8Array(c.encodingLength(v));
    c.encode(v, b, 0);
    seeds.push([name, c as unknown as Codec<object>, b]);
  };
  enc('vxlan', vxlan, { flags: 8, vni: 4097 });
  enc('ethernet', ethernet, {
    dst: randomBytes(6),
    src: randomBytes(6),
    tci: 5,
    tpid: 0x8100,
    etherType: 0x0800,
    payload: randomBytes(50),
  });
  enc('arp', arp, { op: 1, sha: randomBytes(6), spa: 1, tha: randomBytes(6), tpa: 2 });
  enc('ipv4', ipv4, {
    tos: 0,
    id: 1,
    df: true,
    mf: false,
    fragOffset: 0,
    ttl: 64,
    proto: 6,
    checksum: 0,
    src: 1,
    dst: 2,
    options: new Uint8Array(8),
    payload: randomBytes(40),
  });
  enc('ipv6', ipv6, {
    trafficClass: 0,
    flowLabel: 1,
    nextHeader: 17,
    hopLimit: 64,
    src: randomBytes(16),
    dst: randomBytes(16),
    payload: randomBytes(20),
  });
  enc('udp', udp, { sport: 1, dport: 2, checksum: 0, payload: randomBytes(20) });
  enc('tcp', tcp, {
    sport: 1,
    dport: 2,
    seq: 3,
    ack: 4,
    flags: 0x18,
    window: 5,
    checksum: 0,
    urgent: 0,
    options: new Uint8Array(4),
    payload: randomBytes(30),
  });
  const end = Date.now() + SECONDS * 1000;
  let n = 0;
  while (Date.now() < end) {
    for (const [name, codec, seed] of seeds) {
      const input = mutate([seed]);
      try {
        codec.decode(input, 0);
      } catch (e) {
        assert.ok(e instanceof DecodeError, `${name}: ${Buffer.from(input).toString('hex')} threw ${e}`);
      }
      // any input hashes, to a uint32 (NaN or a negative number would make a bad UDP source port), and the same
      // bytes elsewhere hash the same (a flow's datagrams must keep one source port)
      const h = flowHash(input, 0, input.length);
      assert.ok(Number.isInteger(h) && h >= 0 && h <= 0xffffffff, `${name}: hash ${h}`);
      const moved = new Uint8Array(input.length + 3);
      moved.set(input, 3);
      assert.equal(flowHash(moved, 3, moved.length), h, `${name}: the hash depends on where the frame lies`);
      n++;
    }
  }
  console.log(`# codec fuzz: ${n} inputs in ${SECONDS} s`);
});

test(`fuzz the forwarding loop for ${SECONDS} s in both directions: no exception escapes, replies stay in bounds`, () => {
  const io = new FakeIo();
  const fdb = new Fdb<Port>({ maxLearned: 256 });
  const udpFd = io.udp();
  let loopErrors = 0;
  const dp = new Dataplane({
    io,
    fdb,
    udpFd,
    txFds: [io.udp(), io.udp()],
    vxlanPort: 4789,
    batch: 16,
    frameMax: 4096,
    onLoopError: () => loopErrors++,
  });
  const VNI = 4097;
  dp.addVni(VNI, true);
  dp.start();
  const a = dp.addPort({
    id: 'a',
    mac: 0x0276c613010a,
    vni: VNI,
    fd: io.tap(),
    ifname: 'eth0',
    ip: 0xc613010a,
    mtu: 1450,
  });
  dp.addPort({ id: 'b', mac: 0x0276c613010b, vni: VNI, fd: io.tap(), ifname: 'eth0', ip: 0xc613010b, mtu: 1450 });
  fdb.floodAdd(VNI, 0xc6120002, 4789, 'kv');
  fdb.set(VNI, 0x0276c6130114, 'kv', { vtep: 0xc6120002, port: 4789 });
  fdb.vnet(VNI).arp = new Map([
    [0xc6130114, 0x0276c6130114],
    [0xc613010b, 0x0276c613010b],
  ]);
  const big = ipv4Frame(0x0276c6130114, 0x0276c613010a, { size: 3000, srcIp: 0xc613010a, dstIp: 0xc6130114 });
  big[20] = 0x40; // DF
  const tagged = ipv4Frame(0xffffffffffff, 0x0276c613010a, { size: 80 });
  tagged.copyWithin(16, 12, 76);
  tagged[12] = 0x81;
  tagged[13] = 0x00;
  // an oversize IPv6 packet (answered with ICMPv6 packet too big)
  const big6 = new Uint8Array(3000).map((_, i) => (i * 13) & 0xff);
  big6.set(
    [
      0x02,
      0x76,
      0xc6,
      0x13,
      0x01,
      0x14,
      0x02,
      0x76,
      0xc6,
      0x13,
      0x01,
      0x0a,
      0x86,
      0xdd,
      0x60,
      0,
      0,
      0,
      (3000 - 54) >> 8,
      (3000 - 54) & 0xff,
      17,
      64,
    ],
    0,
  );
  const txSeeds = [
    arpRequest(0x0276c613010a, 0xc613010a, 0xc6130114),
    big,
    big6,
    tagged,
    ipv4Frame(0x0276c6130114, 0x0276c613010a, { srcIp: 0xc613010a }),
  ];
  const rxSeeds = [
    vxlanDatagram(VNI, ipv4Frame(0x0276c613010a, 0x0276c6130199)),
    vxlanDatagram(VNI, arpRequest(0x0276c6130199, 1, 2)),
    vxlanDatagram(VNI, big),
  ];
  const end = Date.now() + SECONDS * 1000;
  let n = 0;
  while (Date.now() < end) {
    const batch = Array.from({ length: 1 + Math.floor(Math.random() * 20) }, () => mutate(txSeeds));
    io.tapIn.get(a.fd)!.push(...batch);
    io.ready(a.fd);
    io.udpIn.get(udpFd)!.push(
      ...Array.from({ length: 1 + Math.floor(Math.random() * 20) }, () => ({
        data: mutate(rxSeeds),
        addr: Math.random() < 0.8 ? 0xc6120002 : 0xc6120063,
        port: 40000,
      })),
    );
    io.ready(udpFd);
    n += 2;
    for (const q of io.tapOut.values()) {
      for (const f of q)
        assert.ok(f.length >= 14 && f.length <= 4096 + 64, `frame of ${f.length} bytes written to a TAP`);
      q.length = 0;
    }
    for (const d of io.sent)
      assert.ok(d.data.length >= 8 + 14 && d.data.length <= 4096 + 64, `datagram of ${d.data.length} bytes sent`);
    io.sent.length = 0;
  }
  assert.equal(loopErrors, 0);
  assert.ok(dp.ports.has('a'), 'the port was never failed');
  assert.ok(fdb.vnet(VNI).learned <= 256, 'learning bounded');
  const c = dp.counters;
  console.log(
    `# loop fuzz: ${n} batches; arp_suppressed ${c.arp_suppressed}, icmp_frag_needed ${c.icmp_frag_needed}, icmp6_packet_too_big ${c.icmp6_packet_too_big}, drops ${c.totalDrops()}`,
  );
  assert.ok(
    c.arp_suppressed > 0 && c.icmp_frag_needed > 0 && c.icmp6_packet_too_big > 0,
    'the mutated seeds reached the ARP and ICMP paths',
  );
});

test(`fuzz the offload paths for ${SECONDS} s (native split and GRO, IPv4/IPv6 TCP and UDP): no exception escapes, outputs stay in bounds`, async () => {
  const { nativeKernels } = await import('../../src/dataplane/kernels.js');
  const gso = await import('../../src/vxlan/gso.js');
  const samples = await import('../../src/vxlan/samples.js');
  const io = new FakeIo();
  const fdb = new Fdb<Port>({ maxLearned: 256 });
  const udpFd = io.udp();
  let loopErrors = 0;
  // what the agent runs: the native per-byte kernels (the data plane checks each against its JS reference first)
  const dp = new Dataplane({
    io,
    kernels: nativeKernels(),
    fdb,
    udpFd,
    txFds: [io.udp()],
    vxlanPort: 4789,
    batch: 16,
    offload: true,
    udpGro: true,
    onLoopError: () => loopErrors++,
  });
  const VNI = 4097;
  dp.addVni(VNI, true);
  dp.start();
  const MAC_A = 0x0276c613010a;
  const MAC_R = 0x0276c6130114;
  const a = dp.addPort({
    id: 'a',
    mac: MAC_A,
    vni: VNI,
    fd: io.tap(),
    ifname: 'eth0',
    mtu: 1450,
    vnetHdr: true,
    uso: true,
  });
  dp.addPort({
    id: 'b',
    mac: 0x0276c613010b,
    vni: VNI,
    fd: io.tap(),
    ifname: 'eth0',
    mtu: 1450,
    vnetHdr: true,
    uso: true,
  });
  fdb.floodAdd(VNI, 0xc6120002, 4789, 'kv');
  fdb.set(VNI, MAC_R, 'kv', { vtep: 0xc6120002, port: 4789 });
  const macs = (f: Uint8Array, dst: number, src: number): Uint8Array => {
    for (let i = 0; i < 6; i++) {
      f[i] = Math.floor(dst / 2 ** (8 * (5 - i))) & 0xff;
      f[6 + i] = Math.floor(src / 2 ** (8 * (5 - i))) & 0xff;
    }
    return f;
  };
  const withHdr = (f: Uint8Array, type: number, mss: number): Uint8Array => {
    const h = new Uint8Array(10 + f.length);
    h[0] = 1; // NEEDS_CSUM
    h[1] = type;
    h[4] = mss & 0xff;
    h[5] = mss >> 8;
    h.set(f, 10);
    return h;
  };
  const txSeeds = [
    withHdr(macs(samples.sampleTcpV4Frame(20000), MAC_R, MAC_A), gso.VNET_GSO_TCPV4, 1398),
    withHdr(macs(samples.sampleTcpV6Frame(20000, { tcpOpts: true }), MAC_R, MAC_A), gso.VNET_GSO_TCPV6, 1378),
    withHdr(macs(samples.sampleUdpFrame(12000), MAC_R, MAC_A), gso.VNET_GSO_UDP_L4, 1200),
    withHdr(macs(samples.sampleUdpFrame(9000, { v6: true }), 0x0276c613010b, MAC_A), gso.VNET_GSO_UDP_L4, 1000),
    withHdr(macs(samples.sampleTcpV4Frame(300), MAC_R, MAC_A), 0, 0),
  ];
  // receive: runs of in-order segments (IPv4 and IPv6) for endpoint a, as UDP GRO buffers
  const run = (v6: boolean): { data: Uint8Array; gso: number } => {
    const segs: Uint8Array[] = [];
    for (let k = 0; k < 6; k++) {
      const f = macs(
        v6 ? samples.sampleTcpV6Frame(1000, { seed: 1 }) : samples.sampleTcpV4Frame(1000, { seed: 1 }),
        MAC_A,
        MAC_R,
      );
      const t = 14 + (v6 ? 40 : 20);
      const seq = ((f[t + 4] << 24) | (f[t + 5] << 16) | (f[t + 6] << 8) | f[t + 7]) + k * 1000;
      f[t + 4] = (seq >>> 24) & 0xff;
      f[t + 5] = (seq >>> 16) & 0xff;
      f[t + 6] = (seq >>> 8) & 0xff;
      f[t + 7] = seq & 0xff;
      f[t + 16] = 0;
      f[t + 17] = 0;
      const ps = v6
        ? pseudoSumV6(f.subarray(22, 38), f.subarray(38, 54), 6, f.length - t)
        : pseudoSumV4(0xc6130101, 0xc6130103, 6, f.length - t);
      const cs = finish(sum16(f, t, f.length, ps));
      f[t + 16] = cs >> 8;
      f[t + 17] = cs & 0xff;
      segs.push(vxlanDatagram(VNI, f));
    }
    return { data: new Uint8Array(Buffer.concat(segs)), gso: segs[0].length };
  };
  // and runs of equal-sized UDP datagrams (IPv4 and IPv6), as a USO sender's agent puts them on the wire
  const udpRun = (v6: boolean): { data: Uint8Array; gso: number } => {
    const sf = macs(samples.sampleUdpFrame(6 * 900 + 300, { v6 }), MAC_A, MAC_R);
    const out = new Uint8Array(2 * sf.length);
    const r = gso.segmentSuperFrame(sf, 0, sf.length, 900, out, 0, 0)!;
    const ds = Array.from({ length: r.count }, (_, k) =>
      vxlanDatagram(VNI, out.subarray(k * r.stride, Math.min(r.total, (k + 1) * r.stride))),
    );
    return { data: new Uint8Array(Buffer.concat(ds)), gso: ds[0].length };
  };
  const rxSeeds = [run(false), run(true), udpRun(false), udpRun(true)];
  const end = Date.now() + SECONDS * 1000;
  let batches = 0;
  while (Date.now() < end) {
    io.tapIn.get(a.fd)!.push(...Array.from({ length: 1 + Math.floor(Math.random() * 8) }, () => mutate(txSeeds)));
    io.ready(a.fd);
    io.udpIn.get(udpFd)!.push(
      ...Array.from({ length: 1 + Math.floor(Math.random() * 8) }, () => {
        const s = rxSeeds[Math.floor(Math.random() * rxSeeds.length)];
        const d = mutate([s.data]);
        return {
          data: d,
          addr: 0xc6120002,
          port: 40000,
          gso: Math.random() < 0.2 ? 1 + Math.floor(Math.random() * 3000) : s.gso,
        };
      }),
    );
    io.ready(udpFd);
    batches += 2;
    for (const q of io.tapOut.values()) {
      for (const f of q)
        assert.ok(f.length >= 14 && f.length <= 65535 + 64, `frame of ${f.length} bytes written to a TAP`);
      q.length = 0;
    }
    for (const d of io.sent)
      assert.ok(d.data.length >= 8 + 14 && d.data.length <= 65535, `datagram of ${d.data.length} bytes sent`);
    io.sent.length = 0;
  }
  assert.equal(loopErrors, 0);
  assert.ok(dp.ports.has('a'), 'the port was never failed');
  const c = dp.counters;
  console.log(
    `# offload fuzz: ${batches} batches; tx_gso_frames ${c.tx_gso_frames}, segments ${c.tx_gso_segments}, rx_gro_frames ${c.rx_gro_frames} (UDP ${c.rx_gro_udp_frames}), tx_bad_offload ${c.tx_bad_offload}, drops ${c.totalDrops()}`,
  );
  assert.ok(
    c.tx_gso_segments > 0 && c.rx_gro_frames > c.rx_gro_udp_frames && c.rx_gro_udp_frames > 0,
    'the mutated seeds reached the split and both merges',
  );
});
