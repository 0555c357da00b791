import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  ethernet,
  ipv4,
  ipv6,
  tcp,
  finish,
  sum16,
  pseudoSumV4,
  pseudoSumV6,
  pseudoSumV6At,
  completePartialChecksum,
  internetChecksum,
  finishChecksum,
  segmentSuperFrame,
  IPPROTO_TCP,
  TCP_FLAG_PSH,
  TCP_FLAG_FIN,
  TCP_FLAG_CWR,
  TCP_FLAG_ACK,
} from '../../src/vxlan/index.js';
import { native } from '../../src/sys/native.js';

/** A TCP super-frame as a TAP with TSO hands it over: one IPv4/TCP packet with a large payload. */
function superFrame(
  payload: Uint8Array,
  flags = TCP_FLAG_ACK | TCP_FLAG_PSH,
  opts = new Uint8Array([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]),
): Uint8Array {
  const t = new Uint8Array(20 + opts.length + payload.length);
  tcp.encode(
    {
      sport: 40000,
      dport: 5201,
      seq: 0xfffff000,
      ack: 77,
      flags,
      window: 512,
      checksum: 0,
      urgent: 0,
      options: opts,
      payload,
    },
    t,
    0,
  );
  const ip = new Uint8Array(20 + t.length);
  ipv4.encode(
    {
      tos: 0,
      id: 0xfffe,
      df: true,
      mf: false,
      fragOffset: 0,
      ttl: 64,
      proto: IPPROTO_TCP,
      checksum: 0,
      src: 0xc6130102,
      dst: 0xc6130103,
      options: new Uint8Array(0),
      payload: t,
    },
    ip,
    0,
  );
  const f = new Uint8Array(14 + ip.length);
  ethernet.encode(
    {
      dst: new Uint8Array([2, 0, 0, 0, 0, 2]),
      src: new Uint8Array([2, 0, 0, 0, 0, 1]),
      tci: -1,
      etherType: 0x0800,
      payload: ip,
    },
    f,
    0,
  );
  return f;
}

test('TSO: a 64 KB super-frame becomes MSS-sized frames with their own lengths, ids, seqs, flags and checksums', () => {
  const payload = randomBytes(65000);
  const src = new Uint8Array(100 + 70000);
  const f = superFrame(payload, TCP_FLAG_ACK | TCP_FLAG_PSH | TCP_FLAG_FIN | TCP_FLAG_CWR);
  src.set(f, 100);
  const dst = new Uint8Array(80000).fill(0xee);
  const mss = 1398;
  const r = segmentSuperFrame(src, 100, f.length, mss, dst, 16, 8)!;
  assert.ok(r);
  assert.equal(r.count, Math.ceil(65000 / mss));
  const hdrs = 14 + 20 + 32;
  assert.equal(r.stride, 8 + hdrs + mss);
  assert.ok(
    dst.subarray(0, 16 + 8).every((x) => x === 0xee),
    'prefix bytes left alone',
  );
  const got: Uint8Array[] = [];
  for (let k = 0; k < r.count; k++) {
    const o = 16 + k * r.stride + 8;
    const end = k === r.count - 1 ? 16 + r.total : o + hdrs + mss;
    const e = ethernet.decode(dst, o, end);
    const ip = ipv4.decode(e.payload, 0);
    assert.equal(internetChecksum(e.payload, 0, 20), 0, `segment ${k}: IPv4 header checksum`);
    assert.equal(ip.id, (0xfffe + k) & 0xffff, 'ids count up (and wrap)');
    const t = tcp.decode(ip.payload, 0);
    assert.equal(t.seq, (0xfffff000 + k * mss) >>> 0, 'seq advances by MSS (and wraps)');
    const seg = ip.payload;
    assert.equal(
      finish(sum16(seg, 0, seg.length, pseudoSumV4(ip.src, ip.dst, IPPROTO_TCP, seg.length))),
      0,
      `segment ${k}: TCP checksum`,
    );
    const last = k === r.count - 1;
    assert.equal(!!(t.flags & TCP_FLAG_PSH), last, 'PSH on the last only');
    assert.equal(!!(t.flags & TCP_FLAG_FIN), last, 'FIN on the last only');
    assert.equal(!!(t.flags & TCP_FLAG_CWR), k === 0, 'CWR on the first only');
    assert.equal(t.options.length, 12, 'options copied to every segment');
    got.push(t.payload);
  }
  assert.deepEqual(Buffer.concat(got), Buffer.from(payload), 'payloads concatenate to the original');
  assert.ok(
    dst.subarray(16 + r.total).every((x) => x === 0xee),
    'nothing written past total',
  );
});

/** The IPv6 super-frame a TAP with TSO6 hands over: fe80:: addresses, TCP right after the fixed header. */
function superFrameV6(payload: Uint8Array, flags = TCP_FLAG_ACK | TCP_FLAG_PSH): Uint8Array {
  const opts = new Uint8Array([1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
  const src = Uint8Array.from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x76, 0xc6, 0xff, 0xfe, 0x13, 1, 2]);
  const dst = Uint8Array.from([0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x76, 0xc6, 0xff, 0xfe, 0x13, 1, 1]);
  const t = new Uint8Array(20 + opts.length + payload.length);
  tcp.encode(
    {
      sport: 40000,
      dport: 5201,
      seq: 0xfffff000,
      ack: 77,
      flags,
      window: 512,
      checksum: 0,
      urgent: 0,
      options: opts,
      payload,
    },
    t,
    0,
  );
  const ip = new Uint8Array(40 + t.length);
  ipv6.encode(
    { trafficClass: 0x12, flowLabel: 0xabcde, nextHeader: IPPROTO_TCP, hopLimit: 64, src, dst, payload: t },
    ip,
    0,
  );
  const f = new Uint8Array(14 + ip.length);
  ethernet.encode(
    {
      dst: new Uint8Array([2, 0, 0, 0, 0, 2]),
      src: new Uint8Array([2, 0, 0, 0, 0, 1]),
      tci: -1,
      etherType: 0x86dd,
      payload: ip,
    },
    f,
    0,
  );
  return f;
}

test('TSO over IPv6: each frame gets its own payload length, seq, flags and checksum; the IPv6 header is kept', () => {
  const payload = randomBytes(60000);
  const f = superFrameV6(payload, TCP_FLAG_ACK | TCP_FLAG_PSH | TCP_FLAG_FIN | TCP_FLAG_CWR);
  const dst = new Uint8Array(80000).fill(0xee);
  const mss = 1378;
  const r = segmentSuperFrame(f, 0, f.length, mss, dst, 8, 8)!;
  assert.ok(r);
  assert.equal(r.count, Math.ceil(60000 / mss));
  const hdrs = 14 + 40 + 32;
  assert.equal(r.stride, 8 + hdrs + mss);
  const got: Uint8Array[] = [];
  for (let k = 0; k < r.count; k++) {
    const o = 8 + k * r.stride + 8;
    const end = k === r.count - 1 ? 8 + r.total : o + hdrs + mss;
    const e = ethernet.decode(dst, o, end);
    assert.equal(e.etherType, 0x86dd);
    const ip = ipv6.decode(e.payload, 0);
    assert.equal(ip.payload.length, e.payload.length - 40, `segment ${k}: payload length`);
    assert.equal(ip.flowLabel, 0xabcde, 'flow label kept');
    assert.equal(ip.trafficClass, 0x12, 'traffic class kept');
    assert.equal(ip.hopLimit, 64);
    const t = tcp.decode(ip.payload, 0);
    assert.equal(t.seq, (0xfffff000 + k * mss) >>> 0, 'seq advances by MSS (and wraps)');
    const seg = ip.payload;
    assert.equal(
      finish(sum16(seg, 0, seg.length, pseudoSumV6(ip.src, ip.dst, IPPROTO_TCP, seg.length))),
      0,
      `segment ${k}: TCP checksum`,
    );
    const last = k === r.count - 1;
    assert.equal(!!(t.flags & TCP_FLAG_PSH), last, 'PSH on the last only');
    assert.equal(!!(t.flags & TCP_FLAG_FIN), last, 'FIN on the last only');
    assert.equal(!!(t.flags & TCP_FLAG_CWR), k === 0, 'CWR on the first only');
    got.push(t.payload);
  }
  assert.deepEqual(Buffer.concat(got), Buffer.from(payload), 'payloads concatenate to the original');
  assert.ok(
    dst.subarray(8 + r.total).every((x) => x === 0xee),
    'nothing written past total',
  );
  const hbh = Uint8Array.from(f);
  hbh[14 + 6] = 0; // a hop-by-hop header first: not offloaded by Linux TCP, refused rather than cut wrongly
  assert.equal(segmentSuperFrame(hbh, 0, hbh.length, mss, dst, 0, 8), null, 'extension header');
  assert.equal(segmentSuperFrame(f, 0, 14 + 40 + 10, mss, dst, 0, 8), null, 'TCP header cut off');
});

test('USO: a UDP super-datagram (IPv4 and IPv6) becomes gso_size datagrams with their own lengths and checksums', async () => {
  const { sampleUdpFrame } = await import('../../src/vxlan/samples.js');
  const { udp } = await import('../../src/vxlan/index.js');
  for (const v6 of [false, true]) {
    const seg = 1200;
    const f = sampleUdpFrame(30000, { v6, seed: 3 });
    const dst = new Uint8Array(40000).fill(0xee);
    const r = segmentSuperFrame(f, 0, f.length, seg, dst, 8, 8)!;
    assert.ok(r, `IPv${v6 ? 6 : 4}`);
    assert.equal(r.count, Math.ceil(30000 / seg));
    const l3 = v6 ? 40 : 20;
    assert.equal(r.stride, 8 + 14 + l3 + 8 + seg);
    const got: Uint8Array[] = [];
    for (let k = 0; k < r.count; k++) {
      const o = 8 + k * r.stride + 8;
      const end = k === r.count - 1 ? 8 + r.total : o + r.stride - 8;
      const e = ethernet.decode(dst, o, end);
      let payload: Uint8Array;
      if (v6) {
        const ip = ipv6.decode(e.payload, 0);
        assert.equal(ip.nextHeader, 17);
        assert.equal(
          finish(sum16(ip.payload, 0, ip.payload.length, pseudoSumV6(ip.src, ip.dst, 17, ip.payload.length))),
          0,
          `IPv6 datagram ${k}: UDP checksum`,
        );
        payload = ip.payload;
      } else {
        const ip = ipv4.decode(e.payload, 0);
        assert.equal(internetChecksum(e.payload, 0, 20), 0, `datagram ${k}: IPv4 header checksum`);
        assert.equal(
          finish(sum16(ip.payload, 0, ip.payload.length, pseudoSumV4(ip.src, ip.dst, 17, ip.payload.length))),
          0,
          `IPv4 datagram ${k}: UDP checksum`,
        );
        payload = ip.payload;
      }
      const u = udp.decode(payload, 0);
      assert.equal((payload[4] << 8) | payload[5], payload.length, 'UDP length of each datagram');
      assert.equal(u.payload.length, k === r.count - 1 ? 30000 - k * seg : seg);
      assert.equal(u.sport, 443);
      got.push(u.payload);
    }
    assert.deepEqual(
      Buffer.concat(got),
      Buffer.from(f.subarray(f.length - 30000)),
      'payloads concatenate to the original',
    );
  }
  // a computed UDP checksum of 0 is sent as 0xffff (0 would mean "no checksum" over IPv4, and is invalid over IPv6)
  const f = sampleUdpFrame(2, { seed: 9 });
  const dst = new Uint8Array(200);
  const at = 8 + 14 + 20 + 6; // the UDP checksum of the one datagram written
  segmentSuperFrame(f, 0, f.length, 1200, dst, 0, 8);
  const c = (dst[at] << 8) | dst[at + 1];
  // add c to the payload word (ones' complement): the datagram's sum becomes 0xffff, its computed checksum 0
  let w = ((f[f.length - 2] << 8) | f[f.length - 1]) + c;
  if (w > 0xffff) w = (w & 0xffff) + 1;
  f[f.length - 2] = w >> 8;
  f[f.length - 1] = w & 0xff;
  segmentSuperFrame(f, 0, f.length, 1200, dst, 0, 8);
  assert.deepEqual([dst[at], dst[at + 1]], [0xff, 0xff], 'a computed 0 goes out as 0xffff');
  const { native } = await import('../../src/sys/native.js');
  const buf = new Uint8Array(400);
  buf.set(f, 0);
  assert.equal(native().tsoSplit(buf, 0, f.length, 1200, 200, 8, -1, new Int32Array(3)), 1);
  assert.deepEqual([buf[200 + at], buf[200 + at + 1]], [0xff, 0xff], 'the native split does the same');
});

test('TSO: exact multiples, a payload under one MSS, and refusals', () => {
  const f = superFrame(randomBytes(1398 * 3), TCP_FLAG_ACK);
  const dst = new Uint8Array(10000);
  const r = segmentSuperFrame(f, 0, f.length, 1398, dst, 0, 8)!;
  assert.equal(r.count, 3);
  assert.equal(r.total, 3 * r.stride);
  const small = superFrame(randomBytes(10));
  assert.equal(segmentSuperFrame(small, 0, small.length, 1398, dst, 0, 8)!.count, 1);
  const udp = Uint8Array.from(f);
  udp[14 + 9] = 47; // GRE: neither TCP nor UDP
  assert.equal(segmentSuperFrame(udp, 0, udp.length, 1398, dst, 0, 8), null, 'neither TCP nor UDP');
  assert.equal(segmentSuperFrame(f, 0, 40, 1398, dst, 0, 8), null, 'headers cut off');
  assert.equal(segmentSuperFrame(f, 0, f.length, 1398, new Uint8Array(100), 0, 8), null, 'no room');
  for (let i = 0; i < 2000; i++) {
    const g = Uint8Array.from(f);
    for (let k = 0; k < 4; k++) g[Math.floor(Math.random() * 80)] = Math.floor(Math.random() * 256);
    const cut = Math.floor(Math.random() * g.length);
    const out = segmentSuperFrame(g, 0, cut, 1 + Math.floor(Math.random() * 2000), dst, 0, 8);
    if (out) assert.ok(out.total <= dst.length);
  }
});

test('tapGsoMaxSegs: the most segments whose VXLAN datagrams fit one UDP GSO send', async () => {
  const { UDP_GSO_MAX_BYTES, UDP_GSO_MAX_SEGS } = await import('../../src/vxlan/gso.js');
  const { tapGsoMaxSegs } = await import('../../src/tap/tap.js');
  for (const mtu of [68, 576, 1280, 1450, 1500, 8950, 9000, 65000]) {
    const n = tapGsoMaxSegs(mtu);
    const dgram = 8 + 14 + mtu;
    assert.ok(n >= 1 && n <= UDP_GSO_MAX_SEGS, `mtu ${mtu}: ${n}`);
    if (n > 1) assert.ok(n * dgram <= UDP_GSO_MAX_BYTES, `mtu ${mtu}: ${n} datagrams of ${dgram} B do not fit`);
    if (n < UDP_GSO_MAX_SEGS) assert.ok((n + 1) * dgram > UDP_GSO_MAX_BYTES, `mtu ${mtu}: ${n + 1} would fit too`);
  }
  assert.equal(tapGsoMaxSegs(1450), 44);
  assert.equal(tapGsoMaxSegs(576), UDP_GSO_MAX_SEGS);
});

test('NEEDS_CSUM: completing a partial checksum gives the full one', () => {
  const f = superFrame(randomBytes(777));
  const ipOff = 14;
  const tcpOff = ipOff + 20;
  const len = f.length - tcpOff;
  // what a TAP with TUN_F_CSUM hands over: the field holds the pseudo-header sum only
  f[tcpOff + 16] = 0;
  f[tcpOff + 17] = 0;
  const ps = pseudoSumV4(0xc6130102, 0xc6130103, IPPROTO_TCP, len);
  f[tcpOff + 16] = ps >>> 8;
  f[tcpOff + 17] = ps & 0xff;
  assert.ok(finishChecksum(f, 0, f.length, tcpOff, 16));
  assert.equal(finish(sum16(f, tcpOff, f.length, pseudoSumV4(0xc6130102, 0xc6130103, IPPROTO_TCP, len))), 0);
  assert.ok(!finishChecksum(f, 0, f.length, f.length, 0), 'offsets outside the frame are refused');
});

test('native sum16 (the addon, used by the agent) equals the JS sum16 on random spans, offsets and initial values', async () => {
  const { native } = await import('../../src/sys/native.js');
  const { sum16: sum16js } = await import('../../src/vxlan/checksum.js');
  const { checkSum16 } = await import('../../src/dataplane/kernels.js');
  const n = native();
  const buf = new Uint8Array(randomBytes(70_000));
  for (let k = 0; k < 20_000; k++) {
    const a = Math.floor(Math.random() * 4000);
    const b = a + Math.floor(Math.random() * (k % 10 === 0 ? 66_000 : 3000));
    const end = Math.min(b, buf.length);
    const init = Math.floor(Math.random() * 0x20000);
    assert.equal(n.sum16(buf, a, end, init), sum16js(buf, a, end, init), `[${a}, ${end}) + ${init}`);
  }
  for (const ff of [new Uint8Array(1501).fill(0xff), new Uint8Array(64)])
    assert.equal(n.sum16(ff, 0, ff.length, 0xffff), sum16js(ff, 0, ff.length, 0xffff));
  assert.throws(() => n.sum16(buf, 10, 5), /bad arguments/);
  assert.throws(() => n.sum16(buf, 0, buf.length + 1), /bad arguments/);
  assert.throws(() => checkSum16(() => 0), /disagrees with the JS sum16/);
});

test('native tsoSplit (used by the agent) writes the same bytes and results as tsoSplitJs on random super-frames', async () => {
  const { native } = await import('../../src/sys/native.js');
  const { tsoSplitJs } = await import('../../src/vxlan/gso.js');
  const { sampleTcpV4Frame, sampleTcpV6Frame, sampleUdpFrame } = await import('../../src/vxlan/samples.js');
  const { checkTsoSplit } = await import('../../src/dataplane/kernels.js');
  const n = native();
  const outA = new Int32Array(3);
  const outB = new Int32Array(3);
  let segments = 0;
  for (let k = 0; k < 300; k++) {
    const payload = k % 7 === 0 ? Math.floor(Math.random() * 40) : Math.floor(Math.random() * 65_000);
    const mss = [1, 536, 1398, 1448, 8960][k % 5];
    if (payload / mss > 200) continue;
    const shape = {
      vlan: k % 3 === 0,
      ipOpts: k % 4 === 0,
      tcpOpts: k % 2 === 0,
      flags: [0x10, 0x18, 0x19, 0x98, 0x99][k % 5],
      seed: k,
    };
    const frame =
      k % 5 === 2
        ? sampleUdpFrame(payload, { ...shape, v6: k % 2 === 0 })
        : k % 3 === 1
          ? sampleTcpV6Frame(payload, shape)
          : sampleTcpV4Frame(payload, shape);
    frame.set(randomBytes(payload), frame.length - payload); // the checksum fields go stale: the split recomputes them
    const off = k % 5;
    const prefix = 8 + (k % 3) * 8;
    const vni = k % 2 === 0 ? -1 : Math.floor(Math.random() * 0x1000000);
    const dstOff = off + frame.length + (k % 11);
    const a = new Uint8Array(dstOff + frame.length + (prefix + 80) * (Math.ceil(payload / mss) + 1));
    a.set(frame, off);
    const b = a.slice();
    const ra = n.tsoSplit(a, off, frame.length, mss, dstOff, prefix, vni, outA);
    const rb = tsoSplitJs(b, off, frame.length, mss, dstOff, prefix, vni, outB);
    assert.equal(ra, rb, `count, case ${k}`);
    assert.deepEqual(outA, outB, `count/stride/total, case ${k}`);
    assert.ok(
      a.every((x, i) => x === b[i]),
      `bytes, case ${k} (payload ${payload}, mss ${mss})`,
    );
    segments += Math.max(ra, 0);
  }
  assert.ok(segments > 1000, `${segments} segments compared`);
  const f = sampleTcpV4Frame(3000);
  const buf = new Uint8Array(10_000);
  buf.set(f, 0);
  assert.equal(n.tsoSplit(buf, 0, f.length, 1000, 100, 8, 1, outA), -1, 'output overlapping the input is refused');
  assert.equal(n.tsoSplit(buf, 0, f.length, 1000, f.length, 8, 1, new Int32Array(3)), 3);
  assert.equal(n.tsoSplit(buf, 0, f.length, 1000, 9000, 8, 1, outA), -1, 'output that does not fit is refused');
  buf[23] = 47; // GRE: neither TCP nor UDP
  assert.equal(n.tsoSplit(buf, 0, f.length, 1000, f.length, 8, 1, outA), -1, 'neither TCP nor UDP');
  const f6 = sampleTcpV6Frame(3000);
  buf.set(f6, 0);
  assert.equal(n.tsoSplit(buf, 0, f6.length, 1000, f6.length, 8, 1, outA), 3, 'IPv6');
  buf[20] = 0; // next header: hop-by-hop options
  assert.equal(n.tsoSplit(buf, 0, f6.length, 1000, f6.length, 8, 1, outA), -1, 'IPv6 with an extension header');
  buf[14] = 0x50; // version 5
  assert.equal(n.tsoSplit(buf, 0, f6.length, 1000, f6.length, 8, 1, outA), -1, 'neither IPv4 nor IPv6');
  assert.throws(
    () => n.tsoSplit(buf, 0, f.length, 1000, f.length, 4, 1, outA),
    /bad arguments/,
    'a VXLAN header needs 8 prefix bytes',
  );
  assert.throws(() => n.tsoSplit(buf, 0, buf.length + 1, 1000, 0, 8, -1, outA), /bad arguments/);
  assert.throws(() => checkTsoSplit(() => -1), /disagrees with tsoSplitJs/);
});

test('native groSegment (used by the agent) agrees with groSegmentJs: checksum, each flow field, the copy (TCP/IPv4, UDP/IPv4, UDP/IPv6)', async () => {
  const { native } = await import('../../src/sys/native.js');
  const { sampleTcpV4Frame, sampleUdpFrame } = await import('../../src/vxlan/samples.js');
  const { pseudoSumV6At } = await import('../../src/vxlan/checksum.js');
  const { groSegmentJs } = await import('../../src/dataplane/gro.js');
  const { checkGroSegment } = await import('../../src/dataplane/kernels.js');
  const n = native();
  const L4 = 34;
  /** The TCP or UDP checksum of s (Ethernet + IPv4 without options, or + IPv6) made right again. */
  const fixL4 = (s: Uint8Array) => {
    const v6 = s[12] === 0x86;
    const l4 = v6 ? 54 : L4;
    const proto = s[v6 ? 20 : 23];
    const at = l4 + (proto === 17 ? 6 : 16);
    s[at] = 0;
    s[at + 1] = 0;
    const ps = v6
      ? pseudoSumV6At(s, 14, proto, s.length - l4)
      : pseudoSumV4(
          ((s[26] << 24) | (s[27] << 16) | (s[28] << 8) | s[29]) >>> 0,
          ((s[30] << 24) | (s[31] << 16) | (s[32] << 8) | s[33]) >>> 0,
          proto,
          s.length - l4,
        );
    const c = finish(sum16(s, l4, s.length, ps)) || (proto === 17 ? 0xffff : 0);
    s[at] = c >>> 8;
    s[at + 1] = c & 0xff;
  };
  const results = new Map<number, number>();
  for (let k = 0; k < 4500; k++) {
    const shape = k % 3; // 0 TCP/IPv4, 1 UDP/IPv4, 2 UDP/IPv6
    const opts = { tcpOpts: k % 2 === 0 };
    const hdrs = shape === 0 ? L4 + (opts.tcpOpts ? 32 : 20) : shape === 1 ? L4 + 8 : 54 + 8;
    const plen = 1 + Math.floor(Math.random() * 1400);
    const mk = () => (shape === 0 ? sampleTcpV4Frame(plen, opts) : sampleUdpFrame(plen, { v6: shape === 2 }));
    const pending = mk();
    const seg = mk();
    seg.set(randomBytes(plen), hdrs);
    const at = k % 4 === 0 ? -1 : Math.floor(Math.random() * seg.length);
    if (at >= 0) seg[at] ^= 1 << (k % 8);
    if (k % 5 !== 0) fixL4(seg); // else the checksum is most likely wrong now
    const withRef = k % 7 !== 0;
    const a = new Uint8Array(pending.length + seg.length + plen + 40);
    a.set(pending, 0);
    const off = pending.length + (k % 11);
    a.set(seg, off);
    const b = a.slice();
    const dst = off + seg.length + 3;
    // a changed protocol byte makes other header sizes valid: the data plane never offers such a frame with these
    let ra: number;
    try {
      ra = n.groSegment(a, off, seg.length, hdrs, withRef ? 0 : -1, withRef ? dst : -1);
    } catch (e) {
      assert.ok(at === 23 || at === 20, `case ${k}: threw for byte ${at}: ${e}`);
      continue;
    }
    const rb = groSegmentJs(b, off, seg.length, hdrs, withRef ? 0 : -1, withRef ? dst : -1);
    assert.equal(ra, rb, `case ${k} (shape ${shape}): byte ${at} changed`);
    const end = ra === 1 ? a.length : dst; // a[dst..] is scratch unless the segment was appended
    assert.ok(
      a.subarray(0, end).every((x, i) => x === b[i]),
      `case ${k}: bytes`,
    );
    results.set(ra, (results.get(ra) ?? 0) + 1);
  }
  for (const r of [-1, 0, 1]) assert.ok((results.get(r) ?? 0) > 100, `result ${r} seen ${results.get(r) ?? 0} times`);
  // the fields that may differ (IPv4 id, length, header checksum; TCP seq, checksum) do not split a flow
  const p = sampleTcpV4Frame(100);
  const s = sampleTcpV4Frame(100);
  s[18] ^= 0xff; // IPv4 id
  s[L4 + 7] ^= 0xff; // seq
  fixL4(s);
  const a = new Uint8Array(400);
  a.set(p, 0);
  a.set(s, 200);
  assert.equal(n.groSegment(a, 200, s.length, 54, 0, 300), 1);
  assert.deepEqual(a.subarray(300, 400), s.subarray(54), 'payload copied');
  assert.throws(
    () => n.groSegment(a, 200, s.length, 40, 0, 300),
    /bad arguments/,
    'headers shorter than Ethernet + IPv4 + TCP',
  );
  assert.throws(() => n.groSegment(a, 200, s.length, 54, 0, 390), /bad arguments/, 'copy past the end');
  assert.throws(() => checkGroSegment(() => 1), /disagrees with groSegmentJs/);
});

test('native groRun (used by the agent) agrees with groRunJs on runs ended by each rule; a wrong one is refused', async () => {
  const { native } = await import('../../src/sys/native.js');
  const { checkGroRun, checkKernels, jsKernels, nativeKernels } = await import('../../src/dataplane/kernels.js');
  const n = native();
  checkGroRun(n.groRun); // throws if any case disagrees: other VNI / MAC, PSH, short, seq gap, bad checksum, not TCP, size
  checkKernels(nativeKernels()); // the set the agent hands its data plane
  assert.throws(() => checkGroRun((_b, _f, _fr, _e, _s, _r, _h, st) => ((st[4] = 0), 0)), /disagrees with groRunJs/);
  assert.throws(
    () => checkKernels({ ...jsKernels, groRun: () => 0 }),
    /disagrees with groRunJs/,
    'the data plane refuses a wrong kernel set',
  );
  assert.throws(() => n.groRun(new Uint8Array(100), 0, 0, 200, 10, 0, 54, new Int32Array(6)), /bad arguments/);
});

test('completePartialChecksum: a partial TCP/UDP checksum (pseudo-header sum only) is completed; others are left', () => {
  // IPv4/TCP as a Linux sender with checksum offload leaves it: the field holds the folded pseudo-header sum
  const f = superFrame(randomBytes(777));
  const l4 = 14 + 20;
  const tcpLen = f.length - l4;
  const pseudo = pseudoSumV4(0xc6130102, 0xc6130103, IPPROTO_TCP, tcpLen);
  const complete = (b: Uint8Array, at: number, from: number, p: number) => {
    b[at] = 0;
    b[at + 1] = 0;
    const c = finish(sum16(b, from, b.length, p));
    b[at] = c >>> 8;
    b[at + 1] = c & 0xff;
  };
  complete(f, l4 + 16, l4, pseudo); // the frame as it should arrive
  const full = f.slice();
  f[l4 + 16] = pseudo >>> 8;
  f[l4 + 17] = pseudo & 0xff;
  assert.ok(completePartialChecksum(f, 0, f.length));
  assert.deepEqual(f, full, 'the completed frame equals the one with a full checksum');
  assert.equal(finish(sum16(f, l4, f.length, pseudo)), 0, 'and it verifies');
  // a frame with a complete checksum is not touched, nor is a fragment, nor ARP
  assert.equal(completePartialChecksum(f, 0, f.length), false);
  const frag = f.slice();
  frag[14 + 6] |= 0x20; // MF
  frag[l4 + 16] = pseudo >>> 8;
  frag[l4 + 17] = pseudo & 0xff;
  assert.equal(completePartialChecksum(frag, 0, frag.length), false, 'a fragment is left alone');
  // IPv6/TCP too, at an offset inside a larger buffer, with the native sum
  const g6 = superFrameV6(randomBytes(501));
  const buf = new Uint8Array(g6.length + 9);
  buf.set(g6, 9);
  const p6 = pseudoSumV6At(buf, 9 + 14, IPPROTO_TCP, g6.length - 54);
  complete(buf, 9 + 54 + 16, 9 + 54, p6);
  const want = buf.slice();
  buf[9 + 54 + 16] = p6 >>> 8;
  buf[9 + 54 + 17] = p6 & 0xff;
  assert.ok(completePartialChecksum(buf, 9, g6.length, native().sum16));
  assert.deepEqual(buf, want);
});
