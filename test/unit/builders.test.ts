/**
 * The packet builders the data plane answers with (ARP reply, ICMP fragmentation needed, ICMPv6 packet too big):
 * each built at an offset inside a larger buffer from a frame the codecs encoded, then decoded again with the
 * codecs and checked field by field, checksums verified independently of the builder.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { arp, arpReplyInPlace, arpRequestTarget } from '../../src/vxlan/arp.js';
import { finish, pseudoSumV6, sum16 } from '../../src/vxlan/checksum.js';
import {
  ARPOP_REPLY,
  ARPOP_REQUEST,
  ETH_P_ARP,
  ETH_P_IP,
  ETH_P_IPV6,
  IPPROTO_ICMP,
  IPPROTO_ICMPV6,
  IPPROTO_TCP,
} from '../../src/vxlan/constants.js';
import { ethernet, readU16, readU32 } from '../../src/vxlan/ethernet.js';
import { FRAG_NEEDED_SCRATCH, fragNeeded, packetTooBig } from '../../src/vxlan/icmp.js';
import { ipv4, ipv4ChecksumOk } from '../../src/vxlan/ipv4.js';
import { ipv6 } from '../../src/vxlan/ipv6.js';
import { readMac, writeMac } from '../../src/vxlan/mac.js';

const A = 0x0276c6130102; // the requester / sender
const B = 0x0276c6130103; // the owner of the target address / the destination
const OFF = 10; // every builder works at an offset inside a larger buffer

function macView(m: number): Uint8Array {
  const b = new Uint8Array(6);
  writeMac(m, b, 0);
  return b;
}

/** An Ethernet frame around `payload`, encoded by the codec at OFF of a buffer with `slack` bytes after it. */
function frame(
  dst: number,
  src: number,
  etherType: number,
  payload: Uint8Array,
  slack = 0,
): { buf: Uint8Array; len: number } {
  const f = { dst: macView(dst), src: macView(src), tci: -1, etherType, payload };
  const len = ethernet.encodingLength(f);
  const buf = new Uint8Array(OFF + len + slack).fill(0xee);
  assert.equal(ethernet.encode(f, buf, OFF), len);
  return { buf, len };
}

test('ARP: a request for a known address becomes its reply, in place, and decodes as one', () => {
  const req = new Uint8Array(28);
  arp.encode({ op: ARPOP_REQUEST, sha: macView(A), spa: 0xc6130102, tha: new Uint8Array(6), tpa: 0xc6130103 }, req, 0);
  const { buf, len } = frame(0xffffffffffff, A, ETH_P_ARP, req, 5);
  const after = buf.slice(OFF + len);
  assert.equal(arpRequestTarget(buf, OFF), 0xc6130103);
  arpReplyInPlace(buf, OFF, B);
  const eth = ethernet.decode(buf, OFF, OFF + len);
  assert.equal(readMac(eth.dst, 0), A, 'back to the requester');
  assert.equal(readMac(eth.src, 0), B, 'from the owner');
  assert.equal(eth.etherType, ETH_P_ARP);
  const r = arp.decode(eth.payload, 0);
  assert.equal(r.op, ARPOP_REPLY);
  assert.equal(readMac(r.sha, 0), B);
  assert.equal(r.spa, 0xc6130103);
  assert.equal(readMac(r.tha, 0), A);
  assert.equal(r.tpa, 0xc6130102);
  assert.deepEqual(buf.slice(OFF + len), after, 'nothing written past the frame');
  assert.deepEqual(buf.subarray(0, OFF), new Uint8Array(OFF).fill(0xee), 'nothing written before it');
  // what is not a request for an IPv4 address over Ethernet has no target
  assert.equal(arpRequestTarget(buf, OFF), -1, 'a reply');
  const other = frame(0xffffffffffff, A, ETH_P_ARP, req.slice());
  other.buf[OFF + 14 + 3] = 0x06; // protocol type 0x0806
  assert.equal(arpRequestTarget(other.buf, OFF), -1, 'not IPv4');
});

/** An IPv4 packet of `size` bytes with DF (TCP, a byte pattern), in an Ethernet frame. */
function ipv4Packet(
  size: number,
  o: { df?: boolean; proto?: number; icmpType?: number } = {},
): { buf: Uint8Array; len: number } {
  const payload = new Uint8Array(size - 20).map((_, i) => (i * 7 + 3) & 0xff);
  if (o.icmpType !== undefined) payload[0] = o.icmpType;
  const h = {
    tos: 0,
    id: 0x1234,
    df: o.df ?? true,
    mf: false,
    fragOffset: 0,
    ttl: 64,
    proto: o.proto ?? IPPROTO_TCP,
    checksum: 0,
    src: 0xc6130102,
    dst: 0xc6130109,
    options: new Uint8Array(0),
    payload,
  };
  const ip = new Uint8Array(ipv4.encodingLength(h));
  ipv4.encode(h, ip, 0);
  return frame(B, A, ETH_P_IP, ip);
}

test('ICMP fragmentation needed: an oversize DF packet becomes the error its sender needs, quoting header + 8 bytes', () => {
  const { buf, len } = ipv4Packet(1500);
  const orig = buf.slice(OFF + 14, OFF + 14 + 28);
  const scratch = new Uint8Array(FRAG_NEEDED_SCRATCH);
  const r = fragNeeded(buf, OFF, len, 1450, scratch);
  assert.equal(r, 14 + 20 + 8 + 28);
  const eth = ethernet.decode(buf, OFF, OFF + r);
  assert.equal(readMac(eth.dst, 0), A, 'back to the sender');
  assert.equal(readMac(eth.src, 0), B, 'from the MAC it sent to');
  assert.equal(eth.etherType, ETH_P_IP);
  assert.ok(ipv4ChecksumOk(buf, OFF + 14), 'IPv4 header checksum');
  const ip = ipv4.decode(eth.payload, 0);
  assert.equal(ip.proto, IPPROTO_ICMP);
  assert.equal(ip.src, 0xc6130109, 'from the original destination');
  assert.equal(ip.dst, 0xc6130102, 'to the original source');
  assert.equal(ip.tos, 0xc0);
  assert.equal(ip.ttl, 64);
  const icmp = ip.payload;
  assert.equal(icmp.length, 8 + 28);
  assert.equal(icmp[0], 3, 'destination unreachable');
  assert.equal(icmp[1], 4, 'fragmentation needed');
  assert.equal(readU16(icmp, 6), 1450, 'next-hop MTU');
  assert.equal(finish(sum16(icmp, 0, icmp.length)), 0, 'ICMP checksum');
  assert.deepEqual(icmp.subarray(8), orig, 'quotes the IP header and 8 bytes');
});

test('ICMP fragmentation needed: nothing for a packet without DF, an ICMP error, or a short header', () => {
  const scratch = new Uint8Array(FRAG_NEEDED_SCRATCH);
  for (const [what, p] of [
    ['no DF', ipv4Packet(1500, { df: false })],
    ['an ICMP error', ipv4Packet(1500, { proto: IPPROTO_ICMP, icmpType: 3 })],
  ] as const) {
    const before = p.buf.slice();
    assert.equal(fragNeeded(p.buf, OFF, p.len, 1450, scratch), 0, what);
    assert.deepEqual(p.buf, before, `${what}: unchanged`);
  }
  const echo = ipv4Packet(1500, { proto: IPPROTO_ICMP, icmpType: 8 });
  assert.ok(fragNeeded(echo.buf, OFF, echo.len, 1450, scratch) > 0, 'an echo request gets one');
  const short = ipv4Packet(1500);
  assert.equal(fragNeeded(short.buf, OFF, 14 + 24, 1450, scratch), 0, 'shorter than header + 8');
});

const SRC6 = Uint8Array.from([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
const DST6 = Uint8Array.from([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]);

function ipv6Packet(
  payloadLen: number,
  o: { src?: Uint8Array; nextHeader?: number; first?: number; slack?: number } = {},
): { buf: Uint8Array; len: number } {
  const payload = new Uint8Array(payloadLen).map((_, i) => (i * 13 + 1) & 0xff);
  if (o.first !== undefined) payload[0] = o.first;
  const h = {
    trafficClass: 0x12,
    flowLabel: 0xabcde,
    nextHeader: o.nextHeader ?? IPPROTO_TCP,
    hopLimit: 9,
    src: o.src ?? SRC6,
    dst: DST6,
    payload,
  };
  const ip = new Uint8Array(ipv6.encodingLength(h));
  ipv6.encode(h, ip, 0);
  return frame(B, A, ETH_P_IPV6, ip, o.slack ?? 0);
}

test('ICMPv6 packet too big: an oversize packet becomes the error, quoting what fits in 1280 bytes', () => {
  const { buf, len } = ipv6Packet(1460);
  const orig = buf.slice(OFF + 14, OFF + len);
  const r = packetTooBig(buf, OFF, len, buf.length, 1450);
  assert.equal(r, 14 + 1280, 'a quote to the 1280-byte minimum MTU');
  const eth = ethernet.decode(buf, OFF, OFF + r);
  assert.equal(readMac(eth.dst, 0), A);
  assert.equal(readMac(eth.src, 0), B);
  assert.equal(eth.etherType, ETH_P_IPV6);
  const ip = ipv6.decode(eth.payload, 0);
  assert.deepEqual(ip.src, DST6, 'from the original destination');
  assert.deepEqual(ip.dst, SRC6, 'to the original source');
  assert.equal(ip.nextHeader, IPPROTO_ICMPV6);
  assert.equal(ip.trafficClass, 0);
  assert.equal(ip.flowLabel, 0);
  assert.equal(ip.hopLimit, 64);
  const icmp = ip.payload;
  assert.equal(icmp[0], 2, 'packet too big');
  assert.equal(icmp[1], 0);
  assert.equal(readU32(icmp, 4), 1450, 'MTU');
  assert.equal(
    finish(sum16(icmp, 0, icmp.length, pseudoSumV6(ip.src, ip.dst, IPPROTO_ICMPV6, icmp.length))),
    0,
    'ICMPv6 checksum',
  );
  assert.deepEqual(icmp.subarray(8), orig.subarray(0, 1280 - 48), 'the start of the original packet');
  // a packet shorter than the quote limit is quoted whole (the reply is 48 bytes longer: it needs room after it)
  const small = ipv6Packet(700, { slack: 48 });
  const smallOrig = small.buf.slice(OFF + 14, OFF + small.len);
  const rs = packetTooBig(small.buf, OFF, small.len, small.buf.length, 600);
  assert.equal(rs, 14 + 40 + 8 + 740);
  assert.deepEqual(small.buf.subarray(OFF + 14 + 48, OFF + rs), smallOrig);
});

test('ICMPv6 packet too big: nothing for an unspecified source, an ICMPv6 error, or a reply past `end`', () => {
  for (const [what, p] of [
    ['unspecified source', ipv6Packet(1460, { src: new Uint8Array(16) })],
    ['an ICMPv6 error', ipv6Packet(1460, { nextHeader: IPPROTO_ICMPV6, first: 1 })],
  ] as const) {
    const before = p.buf.slice();
    assert.equal(packetTooBig(p.buf, OFF, p.len, p.buf.length, 1450), 0, what);
    assert.deepEqual(p.buf, before, `${what}: unchanged`);
  }
  const echo = ipv6Packet(1460, { nextHeader: IPPROTO_ICMPV6, first: 128 });
  assert.ok(packetTooBig(echo.buf, OFF, echo.len, echo.buf.length, 1450) > 0, 'an echo request gets one');
  const tight = ipv6Packet(200);
  assert.equal(packetTooBig(tight.buf, OFF, tight.len, OFF + 100, 150), 0, 'the reply would not fit before end');
});
