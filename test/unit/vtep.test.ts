/**
 * VTEP numbers (src/common/vtep.ts, native/vtep.c): IPv4 VTEPs are their address, IPv6 VTEPs an id in 0.0.0.0/8;
 * text in and out, what may not be a VTEP, and the native side on IPv6 loopback (no root): a socket bound to an
 * IPv6 VTEP sends to ids (alone and coalesced) and reports a known sender by its id.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import {
  formatVtep,
  formatVtepPort,
  isVtep6,
  notUnicastVtep,
  parseVtep,
  parseVtepAddress,
  splitVtepPort,
  vtepFamily,
  vtepOverhead,
  VTEP6_MAX,
} from '../../src/common/vtep.js';
import { native } from '../../src/sys/native.js';

const EDESTADDRREQ = 89;

test('IPv4 VTEPs are their address; IPv6 VTEPs get one id each, in 0.0.0.0/8, whatever the spelling', () => {
  assert.equal(parseVtep('198.18.0.2'), 0xc6120002);
  assert.equal(vtepFamily(parseVtep('198.18.0.2')), 4);
  const a = parseVtep('2001:db8:18::2');
  assert.ok(isVtep6(a) && a >= 1 && a <= VTEP6_MAX, String(a));
  assert.equal(parseVtep('2001:0db8:0018:0000:0000:0000:0000:0002'), a, 'the same address, spelled out');
  assert.equal(parseVtep('2001:DB8:18::2'), a, 'upper case');
  const b = parseVtep('2001:db8:18::3');
  assert.notEqual(b, a);
  assert.equal(formatVtep(a), '2001:db8:18::2', 'canonical text (RFC 5952)');
  assert.equal(formatVtepPort(a, 4789), '[2001:db8:18::2]:4789');
  assert.equal(formatVtepPort(0xc6120002, 4789), '198.18.0.2:4789');
  assert.equal(native().constants.VTEP6_MAX, VTEP6_MAX, 'the C and TS limits agree');
});

test('what cannot be a VTEP is refused with the reason', () => {
  assert.throws(() => parseVtep('0.1.2.3'), RangeError, '0.0.0.0/8 is where the ids live');
  assert.throws(() => parseVtep('198.18.0'), TypeError);
  assert.throws(() => parseVtep('2001:db8::g'), TypeError);
  for (const [s, why] of [
    ['127.0.0.1', /loopback/],
    ['224.0.0.1', /multicast/],
    ['255.255.255.255', /broadcast/],
    ['ff02::1', /multicast/],
    ['fe80::1', /link-local/],
    ['::1', /loopback/],
    ['::ffff:198.18.0.2', /IPv4-mapped/],
  ] as const) {
    assert.match(notUnicastVtep(parseVtep(s)) ?? 'null', why, s);
    assert.throws(() => parseVtepAddress(s, 'dst', true), why, s);
  }
  assert.equal(parseVtepAddress('127.0.0.1'), 0x7f000001, "an agent's own VTEP may be loopback");
  assert.throws(() => parseVtepAddress('0.0.0.9'), /0\.0\.0\.0\/8/);
  assert.throws(() => parseVtepAddress('::'), /:: is the unspecified address, not a VTEP/);
  assert.throws(() => parseVtepAddress('nope'), /not an IPv4 or IPv6 address/);
  assert.equal(notUnicastVtep(parseVtep('2001:db8:18::2')), null);
});

test('dst text: IPv4[:port], IPv6 or [IPv6]:port', () => {
  assert.deepEqual(splitVtepPort('198.18.0.2', 4789), { addr: '198.18.0.2', port: 4789 });
  assert.deepEqual(splitVtepPort('198.18.0.2:8472', 4789), { addr: '198.18.0.2', port: 8472 });
  assert.deepEqual(splitVtepPort('2001:db8::2', 4789), { addr: '2001:db8::2', port: 4789 });
  assert.deepEqual(splitVtepPort('[2001:db8::2]:8472', 4789), { addr: '2001:db8::2', port: 8472 });
  for (const bad of ['', '198.18.0.2:', '198.18.0.2:0', '198.18.0.2:70000', '[2001:db8::2]:x', '[2001:db8::2'])
    assert.throws(() => splitVtepPort(bad, 4789), /expected IPv4\[:port\], IPv6 or \[IPv6\]:port/, bad);
});

test('the MTU overhead: 50 bytes over IPv4, 70 over IPv6', () => {
  assert.equal(vtepOverhead(4), 50);
  assert.equal(vtepOverhead(6), 70);
});

test('native: an IPv6 id is registered once, to one address', () => {
  const n = native();
  const id = parseVtep('2001:db8:18::40');
  n.vtep6Set(id, new Uint8Array([0x20, 1, 0xd, 0xb8, 0, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40])); // again: fine
  assert.throws(() => n.vtep6Set(id, new Uint8Array(16).fill(1)), /EEXIST/, 'an id never moves');
  assert.throws(() => n.vtep6Set(VTEP6_MAX + 1, new Uint8Array(16).fill(1)), /EINVAL/);
  assert.throws(() => n.vtep6Set(VTEP6_MAX, new Uint8Array(16)), /EINVAL/, ':: is never a VTEP');
});

test('native over IPv6 loopback: sends to an id (alone and coalesced), receives a known sender as its id', async () => {
  const n = native();
  const lo = parseVtep('::1'); // not a VTEP a user may give, but a real IPv6 address to send to here
  const rx = createSocket({ type: 'udp6', ipv6Only: true });
  const got: Buffer[] = [];
  rx.on('message', (m) => got.push(m));
  await new Promise<void>((r) => rx.bind(0, '::1', r));
  const [fd, port] = n.udpOpen(lo, 0, 0, 0, false);
  try {
    const S = n.constants.SEND_STRIDE;
    const arena = new Uint8Array(8192);
    for (let i = 0; i < 4; i++) arena.fill(0x41 + i, i * 1000, i * 1000 + 500);
    // one alone (sendto), then three of equal length to the same id (one UDP GSO send), then an unknown id
    assert.equal(n.sendBatch(Int32Array.of(fd), arena, Int32Array.of(0, 0, 500, lo, rx.address().port, 0), 1), 1);
    const d = new Int32Array(4 * S);
    for (let i = 1; i < 4; i++) d.set([0, i * 1000, 500, lo, rx.address().port, 0], (i - 1) * S);
    d.set([0, 0, 500, VTEP6_MAX - 1, rx.address().port, 0], 3 * S); // an id never registered
    assert.equal(n.sendBatch(Int32Array.of(fd), arena, d, 4), 3);
    assert.equal(d[3 * S + 2], -EDESTADDRREQ, 'an unknown id fails in its own slot');
    for (let i = 0; i < 100 && got.length < 4; i++) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(
      got.map((m) => `${m.length}:${String.fromCharCode(m[0])}`),
      ['500:A', '500:B', '500:C', '500:D'],
    );
    // back: a datagram from the (registered) loopback address arrives tagged with its id and port
    await new Promise<void>((r) => rx.send(Buffer.from('hello'), port, '::1', () => r()));
    const lens = new Int32Array(4);
    const addrs = new Uint32Array(8);
    let k = 0;
    for (let i = 0; i < 100 && k === 0; i++) {
      k = n.recvBatch(fd, arena, 2048, 0, 4, lens, addrs, null);
      if (!k) await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(k, 1);
    assert.equal(lens[0], 5);
    assert.equal(addrs[0], lo, 'the sender is the id of ::1');
    assert.equal(addrs[1], rx.address().port);
  } finally {
    n.closeFd(fd);
    rx.close();
  }
});
