import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import {
  arp,
  type Codec,
  DecodeError,
  ethernet,
  ipv4,
  ipv4ChecksumOk,
  ipv6,
  tcp,
  udp,
  vxlan,
  internetChecksum,
  pseudoSumV4,
  sum16,
  finish,
  flowHash,
  sourcePort,
  pickIndex,
  parseMac,
  formatMac,
  readMac,
  writeMac,
  isGroupMac,
  parseIpv4,
  formatIpv4,
  writeVxlanHeader,
  readVni,
  vxlanFlagsValid,
  ETH_P_IP,
  ETH_P_IPV6,
  ETH_P_ARP,
  IPPROTO_TCP,
  IPPROTO_UDP,
} from '../../src/vxlan/index.js';
import { randomMac } from '../helpers/frames.js';
import { ipv4Frame } from '../helpers/frames.js';

/**
 * The round-trip helper every codec goes through: encode -> decode -> re-encode gives the same bytes;
 * encodingLength equals bytes written; encoding at offset 10 of a larger buffer leaves the rest alone and decodes
 * the same; every truncation is rejected with ERR_TRUNCATED (never a read past the end).
 */
function roundTrip<T extends object>(name: string, codec: Codec<T>, value: T, restIsPayload?: number): void {
  const len = codec.encodingLength(value);
  const a = new Uint8Array(len);
  assert.equal(codec.encode(value, a, 0), len, `${name}: encode returns encodingLength`);
  const back = codec.decode(a, 0);
  const b = new Uint8Array(len);
  assert.equal(codec.encode(back, b, 0), len, `${name}: re-encode length`);
  assert.deepEqual(b, a, `${name}: re-encoded bytes`);
  const big = new Uint8Array(len + 20).fill(0xee);
  assert.equal(codec.encode(value, big, 10), len);
  assert.ok(
    big.subarray(0, 10).every((x) => x === 0xee),
    `${name}: bytes before offset untouched`,
  );
  assert.ok(
    big.subarray(10 + len).every((x) => x === 0xee),
    `${name}: bytes after untouched`,
  );
  assert.deepEqual(big.subarray(10, 10 + len), a, `${name}: same bytes at offset 10`);
  const atOff = codec.decode(big, 10, 10 + len);
  const c = new Uint8Array(len);
  codec.encode(atOff, c, 0);
  assert.deepEqual(c, a, `${name}: decode at offset`);
  for (let cut = 0; cut < len; cut++) {
    if (restIsPayload !== undefined && cut >= restIsPayload) {
      // no length field: a shorter buffer is a shorter payload, read exactly up to the cut
      const v = codec.decode(a.subarray(0, cut), 0) as { payload: Uint8Array };
      assert.equal(
        v.payload.length,
        cut - restIsPayload,
        `${name}: cut at ${cut} gives a ${cut - restIsPayload}-byte payload`,
      );
      continue;
    }
    assert.throws(
      () => codec.decode(a.subarray(0, cut), 0),
      (e: unknown) => e instanceof DecodeError && e.code === 'ERR_TRUNCATED',
      `${name}: truncated to ${cut} bytes must be rejected`,
    );
  }
  assert.throws(() => codec.encode(value, new Uint8Array(len - 1), 0), `${name}: encode into a short buffer throws`);
}

/** Random and mutated input: decode returns or throws DecodeError, nothing else. */
function fuzz<T>(name: string, codec: Codec<T>, seed: Uint8Array, rounds = 3000): void {
  for (let i = 0; i < rounds; i++) {
    let input: Uint8Array;
    if (i % 2 === 0) input = randomBytes(Math.floor(Math.random() * 80));
    else {
      input = Uint8Array.from(seed);
      const flips = 1 + Math.floor(Math.random() * 4);
      for (let k = 0; k < flips && input.length; k++)
        input[Math.floor(Math.random() * input.length)] = Math.floor(Math.random() * 256);
      input = input.subarray(0, Math.floor(Math.random() * (input.length + 1)));
    }
    try {
      codec.decode(input, 0);
    } catch (e) {
      assert.ok(e instanceof DecodeError, `${name}: fuzz input ${Buffer.from(input).toString('hex')} threw ${e}`);
    }
  }
}

const mac = (s: string): Uint8Array => {
  const b = new Uint8Array(6);
  writeMac(parseMac(s), b, 0);
  return b;
};

test('vxlan header: round trip, flags, 24-bit VNI', () => {
  roundTrip('vxlan', vxlan, { flags: 0x08, vni: 0xabcdef });
  roundTrip('vxlan', vxlan, { flags: 0x08, vni: 1 });
  const b = new Uint8Array(8).fill(0xff);
  writeVxlanHeader(b, 0, 4097);
  assert.deepEqual([...b], [0x08, 0, 0, 0, 0x00, 0x10, 0x01, 0], 'reserved bits zeroed, VNI big-endian in bytes 4-6');
  assert.equal(readVni(b, 0), 4097);
  assert.ok(vxlanFlagsValid(b, 0));
  b[0] = 0x0c; // GPE's P bit set as well
  assert.ok(!vxlanFlagsValid(b, 0));
  assert.throws(
    () => vxlan.decode(b, 0),
    (e: unknown) => e instanceof DecodeError && e.code === 'ERR_MALFORMED',
  );
  b[0] = 0x00;
  assert.ok(!vxlanFlagsValid(b, 0), 'I flag missing');
  b[0] = 0x08;
  b[7] = 0xff;
  b[1] = 0xff;
  assert.equal(vxlan.decode(b, 0).vni, 4097, 'reserved bits are ignored on receipt (RFC 7348)');
  assert.throws(() => vxlan.encode({ flags: 8, vni: 1 << 24 }, new Uint8Array(8), 0), RangeError);
  fuzz('vxlan', vxlan, new Uint8Array([8, 0, 0, 0, 0, 16, 1, 0]));
});

test('ethernet: untagged and 802.1Q, payload is a view', () => {
  const payload = Uint8Array.from({ length: 46 }, (_, i) => i);
  roundTrip(
    'ethernet',
    ethernet,
    { dst: mac('ff:ff:ff:ff:ff:ff'), src: mac('02:42:c6:13:01:02'), tci: -1, etherType: ETH_P_IP, payload },
    14,
  );
  roundTrip(
    'ethernet.1q',
    ethernet,
    {
      dst: mac('02:00:00:00:00:01'),
      src: mac('02:00:00:00:00:02'),
      tci: 0x2064,
      tpid: 0x8100,
      etherType: ETH_P_IPV6,
      payload,
    },
    18,
  );
  const buf = new Uint8Array(60);
  ethernet.encode(
    {
      dst: mac('02:00:00:00:00:01'),
      src: mac('02:00:00:00:00:02'),
      tci: -1,
      etherType: ETH_P_ARP,
      payload: new Uint8Array(46),
    },
    buf,
    0,
  );
  const f = ethernet.decode(buf, 0);
  assert.equal(f.payload.buffer, buf.buffer, 'payload is a view, not a copy');
  assert.equal(f.payload.byteOffset, 14);
  fuzz('ethernet', ethernet, buf);
});

test('arp: round trip and rejects non Ethernet/IPv4', () => {
  const p = {
    op: 1,
    sha: mac('02:00:00:00:00:01'),
    spa: parseIpv4('198.19.1.2'),
    tha: new Uint8Array(6),
    tpa: parseIpv4('198.19.1.3'),
  };
  roundTrip('arp', arp, p);
  const b = new Uint8Array(28);
  arp.encode(p, b, 0);
  b[4] = 8;
  assert.throws(
    () => arp.decode(b, 0),
    (e: unknown) => e instanceof DecodeError && e.code === 'ERR_MALFORMED',
  );
  fuzz('arp', arp, b);
});

test('ipv4: round trip with options, checksum, bad lengths', () => {
  const h = {
    tos: 0x10,
    id: 0x1234,
    df: true,
    mf: false,
    fragOffset: 0,
    ttl: 64,
    proto: IPPROTO_UDP,
    checksum: 0,
    src: parseIpv4('198.19.1.2'),
    dst: parseIpv4('198.19.1.3'),
    options: new Uint8Array([1, 1, 1, 0]),
    payload: new Uint8Array([9, 8, 7]),
  };
  roundTrip('ipv4', ipv4, h);
  const b = new Uint8Array(ipv4.encodingLength(h));
  ipv4.encode(h, b, 0);
  assert.ok(ipv4ChecksumOk(b, 0), 'encode writes a valid header checksum');
  b[8] = 63;
  assert.ok(!ipv4ChecksumOk(b, 0));
  const bad = Uint8Array.from(b);
  bad[0] = 0x44; // IHL 16 bytes
  assert.throws(
    () => ipv4.decode(bad, 0),
    (e: unknown) => e instanceof DecodeError && e.code === 'ERR_MALFORMED',
  );
  const tl = Uint8Array.from(b);
  tl[2] = 0;
  tl[3] = 10; // total length < IHL
  assert.throws(() => ipv4.decode(tl, 0), DecodeError);
  fuzz('ipv4', ipv4, b);
});

test('ipv6, udp, tcp: round trips and fuzz', () => {
  const v6 = {
    trafficClass: 0xb8,
    flowLabel: 0xabcde,
    nextHeader: IPPROTO_TCP,
    hopLimit: 64,
    src: randomBytes(16),
    dst: randomBytes(16),
    payload: randomBytes(21),
  };
  roundTrip('ipv6', ipv6, v6);
  const u = { sport: 53, dport: 4789, checksum: 0xbeef, payload: randomBytes(13) };
  roundTrip('udp', udp, u);
  const t = {
    sport: 443,
    dport: 50000,
    seq: 0xfffffff0,
    ack: 7,
    flags: 0x18,
    window: 65535,
    checksum: 0x1234,
    urgent: 0,
    options: new Uint8Array([2, 4, 5, 0xb4]),
    payload: randomBytes(30),
  };
  roundTrip('tcp', tcp, t, 24);
  const b6 = new Uint8Array(ipv6.encodingLength(v6));
  ipv6.encode(v6, b6, 0);
  fuzz('ipv6', ipv6, b6);
  const bu = new Uint8Array(udp.encodingLength(u));
  udp.encode(u, bu, 0);
  fuzz('udp', udp, bu);
  const bt = new Uint8Array(tcp.encodingLength(t));
  tcp.encode(t, bt, 0);
  fuzz('tcp', tcp, bt);
  // TCP payload runs to `end`, not past it
  assert.equal(tcp.decode(bt, 0, bt.length - 5).payload.length, 25);
});

test('internet checksum: RFC 1071 example and odd lengths', () => {
  // RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to 0xddf2
  const b = new Uint8Array([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
  assert.equal(sum16(b, 0, 8), 0xddf2);
  assert.equal(internetChecksum(b, 0, 8), ~0xddf2 & 0xffff);
  assert.equal(sum16(new Uint8Array([0xab]), 0, 1), 0xab00, 'odd byte is padded with zero');
  // a UDP datagram whose checksum field is filled in verifies to zero
  const pkt = new Uint8Array([0x30, 0x39, 0x00, 0x35, 0x00, 0x0b, 0, 0, 1, 2, 3]);
  const src = parseIpv4('198.19.1.2');
  const dst = parseIpv4('198.19.1.3');
  const c = finish(sum16(pkt, 0, pkt.length, pseudoSumV4(src, dst, IPPROTO_UDP, pkt.length)));
  pkt[6] = c >>> 8;
  pkt[7] = c & 0xff;
  assert.equal(finish(sum16(pkt, 0, pkt.length, pseudoSumV4(src, dst, IPPROTO_UDP, pkt.length))), 0);
});

test('flow hash: deterministic, flow-sensitive, never reads past the end', () => {
  const a = ipv4Frame(1, 2, { proto: IPPROTO_TCP, sport: 1000, dport: 80 });
  const a2 = ipv4Frame(1, 2, { proto: IPPROTO_TCP, sport: 1000, dport: 80, size: 1400 });
  assert.equal(flowHash(a, 0, a.length), flowHash(a2, 0, a2.length), 'same flow, different length: same hash');
  const ports = new Set<number>();
  for (let p = 0; p < 256; p++) {
    const f = ipv4Frame(1, 2, { proto: IPPROTO_TCP, sport: 1000 + p, dport: 80 });
    ports.add(sourcePort(flowHash(f, 0, f.length)));
  }
  assert.ok(ports.size > 200, `256 flows should spread over many source ports, got ${ports.size}`);
  for (const p of ports) assert.ok(p >= 49152 && p <= 65535);
  const idx = new Array(4).fill(0);
  for (let p = 0; p < 4000; p++) {
    const f = ipv4Frame(1, 2, { proto: IPPROTO_UDP, sport: p, dport: 53 });
    idx[pickIndex(flowHash(f, 0, f.length), 4)]++;
  }
  for (const n of idx) assert.ok(n > 800 && n < 1200, `4 sockets should each get ~1000 of 4000 flows: ${idx}`);
  assert.equal(sourcePort(0), 49152);
  assert.equal(sourcePort(0xffffffff), 65535);
  // bounded reads: a guarded buffer that throws on any index >= end
  for (let i = 0; i < 2000; i++) {
    const src = randomBytes(Math.floor(Math.random() * 90));
    if (src.length > 13 && i % 2) {
      src[12] = 0x08;
      src[13] = i % 4 === 1 ? 0x00 : 0xdd;
      if (src[13] === 0xdd) src[12] = 0x86;
    }
    const guarded = new Proxy(src, {
      get(t, k) {
        if (typeof k === 'string' && /^\d+$/.test(k) && Number(k) >= t.length) throw new Error(`read past end at ${k}`);
        const v = Reflect.get(t, k);
        return typeof v === 'function' ? v.bind(t) : v;
      },
    });
    const h = flowHash(guarded as unknown as Uint8Array, 0, src.length);
    assert.ok(Number.isInteger(h) && h >= 0 && h <= 0xffffffff);
  }
});

test('MAC and IPv4 helpers', () => {
  const m = parseMac('02:42:C6:13:01:FF');
  assert.equal(formatMac(m), '02:42:c6:13:01:ff');
  const b = new Uint8Array(8);
  writeMac(m, b, 1);
  assert.equal(readMac(b, 1), m);
  assert.equal(readMac(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), 0), 0xffffffffffff);
  assert.ok(isGroupMac(new Uint8Array([0x01, 0, 0x5e, 0, 0, 1]), 0));
  assert.ok(!isGroupMac(b, 1));
  for (let i = 0; i < 100; i++) {
    const r = randomMac();
    const rb = new Uint8Array(6);
    writeMac(r, rb, 0);
    assert.equal(rb[0] & 0x03, 0x02, 'random MACs are unicast and locally administered');
  }
  for (const bad of ['02:42:c6:13:01', '02:42:c6:13:01:0g', '', '02-42-c6-13-01-02'])
    assert.throws(() => parseMac(bad), TypeError);
  assert.equal(formatIpv4(parseIpv4('198.19.255.1')), '198.19.255.1');
  for (const bad of ['198.19.1', '198.19.1.256', '01.2.3.4', '1.2.3.4.5', 'a.b.c.d'])
    assert.throws(() => parseIpv4(bad), TypeError);
});

test('sum16 (unrolled) equals a plain word-by-word reference on random data, every length and alignment', () => {
  const ref = (b: Uint8Array, s0: number, e: number, init: number) => {
    let s = init;
    for (let i = s0; i < e; i += 2) s += (b[i] << 8) | (i + 1 < e ? b[i + 1] : 0);
    while (s > 0xffff) s = (s & 0xffff) + Math.floor(s / 0x10000);
    return s;
  };
  const b = randomBytes(70000);
  b.fill(0xff, 0, 66000); // worst case for carries
  for (let len = 0; len < 40; len++)
    for (let st = 0; st < 3; st++) assert.equal(sum16(b, st, st + len, 7), ref(b, st, st + len, 7));
  for (const [st, len] of [
    [0, 65535],
    [1, 65535],
    [3, 1448],
    [5, 69990],
  ])
    assert.equal(sum16(b, st, st + len, 0x1234), ref(b, st, st + len, 0x1234));
});
