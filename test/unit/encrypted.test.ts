/**
 * Encrypted networks without root: the key schedule (planKeys, deriveKey), the records (parse), and the data
 * plane sealing and opening over the in-memory kernel (FakeIo) with the addon's AEAD. The real thing, agents and
 * the wire, is test/netns/encrypted.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createDecipheriv } from 'node:crypto';
import { Dataplane } from '../../src/dataplane/dataplane.js';
import { Fdb } from '../../src/fdb/fdb.js';
import type { Port } from '../../src/dataplane/port.js';
import { RxKey, SEALED_FLAGS, TxKey, VnetSec } from '../../src/fdb/sec.js';
import { deriveKey, graceMs, planKeys, usable } from '../../src/agent/keyring.js';
import { type NetKey, parseHost, parseNetwork } from '../../src/kv/schema.js';
import { native } from '../../src/sys/native.js';
import { FakeIo } from '../helpers/fakeio.js';
import { arpRequest, ipv4Frame, tcpSuperFrame } from '../helpers/frames.js';

const key = (gen: number, from: number): NetKey => ({ gen, key: Buffer.alloc(32, gen).toString('base64'), from });

test('planKeys: rotate when due, switch after the grace period, drop the old ones a grace period later', () => {
  const R = 3600; // s
  const G = graceMs(R);
  assert.equal(G, 60_000);
  const t0 = 1_000_000;
  // fresh: nothing to do until the rotation is due
  let p = planKeys([key(1, t0)], R, t0 + 1000);
  assert.equal(p.keys, null);
  assert.equal(p.next, t0 + R * 1000);
  // due: generation 2 starts a grace period from now
  const due = t0 + R * 1000;
  p = planKeys([key(1, t0)], R, due, (gen, from) => key(gen, from));
  assert.deepEqual(
    p.keys?.map((k) => [k.gen, k.from]),
    [
      [1, t0],
      [2, due + G],
    ],
  );
  assert.equal(p.next, due + G, 'look again at the switch');
  const two = p.keys!;
  assert.equal(usable(two, due + G - 1).gen, 1, 'senders keep generation 1 until the switch');
  assert.equal(usable(two, due + G).gen, 2);
  // within the overlap after the switch both stay
  p = planKeys(two, R, due + G + 1000);
  assert.equal(p.keys, null);
  assert.equal(p.next, due + 2 * G);
  // a grace period after the switch the old one goes
  p = planKeys(two, R, due + 2 * G);
  assert.deepEqual(
    p.keys?.map((k) => k.gen),
    [2],
  );
  // short periods: the grace is a quarter of the period
  assert.equal(graceMs(8), 2000);
});

test('deriveKey: one key per sender, generation and network; the same on both ends', () => {
  const k = Buffer.alloc(32, 7).toString('base64');
  const n1 = '00112233445566778899aabbccddeeff';
  const n2 = 'ffeeddccbbaa99887766554433221100';
  const a = deriveKey(k, n1, 5001, 1, '198.18.0.1');
  assert.deepEqual(deriveKey(k, n1, 5001, 1, '198.18.0.1'), a, 'deterministic');
  const others = [
    deriveKey(k, n2, 5001, 1, '198.18.0.1'), // another run of the sender
    deriveKey(k, n1, 5001, 2, '198.18.0.1'), // another generation
    deriveKey(k, n1, 5002, 1, '198.18.0.1'), // another network
    deriveKey(k, n1, 5001, 1, '198.18.0.2'), // another sender
    deriveKey(Buffer.alloc(32, 8).toString('base64'), n1, 5001, 1, '198.18.0.1'),
  ];
  for (const o of others) {
    assert.notDeepEqual(o.key, a.key);
    assert.equal(o.key.length, 32);
    assert.equal(o.salt.length, 4);
  }
});

test('records: an encrypted network needs valid keys and a rotation period; a host nonce is 16 bytes of hex', () => {
  const base = { vni: 5001, subnet: '198.19.20.0/24', gateway: null, mtu: 1422, learning: true };
  const good = { ...base, encrypted: true, keys: [key(1, 0), key(2, 5)], rotateSec: 43200 };
  const n = parseNetwork('sec', JSON.stringify(good));
  assert.equal(n?.encrypted, true);
  assert.deepEqual(
    n?.keys?.map((k) => k.gen),
    [1, 2],
  );
  for (const bad of [
    { ...good, keys: [] },
    { ...good, keys: [key(2, 0), key(1, 0)] }, // not increasing
    { ...good, keys: [{ ...key(1, 0), key: 'c2hvcnQ=' }] }, // not 32 bytes
    { ...good, rotateSec: 1 },
    { ...good, encrypted: 'yes' },
  ])
    assert.equal(parseNetwork('sec', JSON.stringify(bad)), null, JSON.stringify(bad).slice(0, 80));
  assert.equal(parseNetwork('p', JSON.stringify(base))?.encrypted, undefined);
  assert.equal(
    parseHost('h1', JSON.stringify({ vtep: '198.18.0.1', port: 4789, nonce: 'a'.repeat(32) }))?.nonce,
    'a'.repeat(32),
  );
  assert.equal(parseHost('h1', JSON.stringify({ vtep: '198.18.0.1', port: 4789, nonce: 'xyz' })), null);
  assert.equal(parseHost('h1', JSON.stringify({ vtep: '198.18.0.1', port: 4789 }))?.nonce, undefined);
});

const VNI = 5001;
const A = 0xc6120001;
const B = 0xc6120002;
const MAC_A = 0x020000000a01;
const MAC_A2 = 0x020000000a03;
const MAC_B = 0x020000000a02;
/** Slots of this test in the addon (other unit tests in the process use low ones). */
const SLOT_A = 60001;
const SLOT_B_RX = 60002;

function host(self: number, mac: number, mac2?: number) {
  const io = new FakeIo();
  const fdb = new Fdb<Port>();
  const udpFd = io.udp();
  const dp = new Dataplane({ io, fdb, udpFd, txFds: [io.udp()], vxlanPort: 4789, batch: 8, frameMax: 9000 });
  dp.addVni(VNI, true);
  dp.start();
  const port = dp.addPort({ id: 'p', mac, vni: VNI, fd: io.tap(), ifname: 'eth0' });
  const port2 = mac2 ? dp.addPort({ id: 'p2', mac: mac2, vni: VNI, fd: io.tap(), ifname: 'eth1' }) : null;
  fdb.floodAdd(VNI, self === A ? B : A, 4789, 'kv');
  const sec = new VnetSec();
  fdb.setSec(VNI, sec);
  return { io, fdb, dp, port, port2, udpFd, sec };
}

test('data plane: frames leave sealed (one seal for every replica), arrive opened; local copies stay clear', () => {
  const n = native();
  const k = deriveKey(Buffer.alloc(32, 1).toString('base64'), '00'.repeat(16), VNI, 1, '198.18.0.1');
  n.aeadKey(SLOT_A, k.key, k.salt);
  n.aeadKey(SLOT_B_RX, k.key, k.salt);
  try {
    const a = host(A, MAC_A, MAC_A2);
    const b = host(B, MAC_B);
    // before A has a key: nothing leaves, counted
    const f = ipv4Frame(MAC_B, MAC_A, { size: 300 });
    a.io.tapIn.get(a.port.fd)!.push(f);
    a.io.ready(a.port.fd);
    assert.equal(a.io.sent.length, 0);
    assert.equal(a.dp.counters.tx_no_key, 1);
    assert.equal(a.io.tapOut.get(a.port2!.fd)?.length, 1, 'flooded (B is unknown here): the local copy went');
    a.sec.tx = new TxKey(SLOT_A, 1);
    b.sec.rx.set(A | 0, [new RxKey(SLOT_B_RX, 1)]);
    // a broadcast: the local endpoint gets it in clear, the wire sealed
    const arp = arpRequest(MAC_A, 0xc6130102, 0xc6130103);
    a.io.tapIn.get(a.port.fd)!.push(arp, f);
    a.io.ready(a.port.fd);
    assert.deepEqual(a.io.tapOut.get(a.port2!.fd)?.slice(1), [arp, f], 'the local copies, in clear');
    assert.equal(a.io.sent.length, 2);
    for (const [i, inner] of [arp, f].entries()) {
      const d = a.io.sent[i].data;
      assert.equal(d.length, inner.length + 8 + 28);
      assert.equal(d[0], SEALED_FLAGS);
      assert.equal(d[8], 1, 'key id');
      assert.equal(Number(Buffer.from(d).readBigUInt64BE(12)), i, 'counters 0, 1');
      // the known answer: node's own AES-256-GCM opens it
      const nonce = Buffer.concat([Buffer.from(k.salt), Buffer.from(d.subarray(12, 20))]);
      const dec = createDecipheriv('aes-256-gcm', k.key, nonce);
      dec.setAAD(d.subarray(0, 20));
      dec.setAuthTag(d.subarray(d.length - 16));
      assert.deepEqual(Buffer.concat([dec.update(d.subarray(20, d.length - 16)), dec.final()]), Buffer.from(inner));
    }
    assert.equal(a.dp.counters.tx_sealed, 2);
    // B opens both and delivers them; a replay of the second is refused
    const wire = a.io.sent.map((s) => ({ data: s.data, addr: A, port: 51000 }));
    b.io.udpIn.get(b.udpFd)!.push(...wire, { ...wire[1], data: Uint8Array.from(wire[1].data) });
    b.io.ready(b.udpFd);
    assert.deepEqual(b.io.tapOut.get(b.port.fd), [arp, f]);
    assert.equal(b.dp.counters.rx_opened, 2);
    assert.equal(b.dp.counters.rx_replay, 1);
    // a flipped bit: bad tag, nothing delivered, the window unmoved (the real one with that counter still opens)
    a.io.sent.length = 0;
    a.io.tapIn.get(a.port.fd)!.push(f);
    a.io.ready(a.port.fd);
    const good = a.io.sent[0].data;
    const bad = Uint8Array.from(good);
    bad[40] ^= 4;
    b.io.udpIn.get(b.udpFd)!.push({ data: bad, addr: A, port: 51000 }, { data: good, addr: A, port: 51000 });
    b.io.ready(b.udpFd);
    assert.equal(b.dp.counters.rx_bad_tag, 1);
    assert.equal(b.io.tapOut.get(b.port.fd)!.length, 3);
    assert.equal(b.dp.counters.rx_opened, 3);
  } finally {
    n.aeadDrop(SLOT_A);
    n.aeadDrop(SLOT_B_RX);
  }
});

/** A TCP/IPv4 super-frame (virtio-net header: GSO TCPV4, gso_size 1370) from MAC_A to MAC_B. */
const superFrame = (payload: Uint8Array): Uint8Array =>
  tcpSuperFrame(payload, { dstMac: MAC_B, srcMac: MAC_A, src: 0xc613010a, dst: 0xc6130114, gsoSize: 1370 });

test('data plane, offloads: a TSO super-frame leaves as sealed equal segments in UDP GSO sends; a UDP GRO buffer of them opens and merges back into one super-frame', () => {
  const n = native();
  const k = deriveKey(Buffer.alloc(32, 2).toString('base64'), '11'.repeat(16), VNI, 1, '198.18.0.1');
  n.aeadKey(SLOT_A, k.key, k.salt);
  n.aeadKey(SLOT_B_RX, k.key, k.salt);
  try {
    const mk = (self: number, mac: number) => {
      const io = new FakeIo();
      const fdb = new Fdb<Port>();
      const udpFd = io.udp();
      const dp = new Dataplane({
        io,
        fdb,
        udpFd,
        txFds: [io.udp()],
        vxlanPort: 4789,
        batch: 8,
        offload: true,
        udpGro: true,
      });
      dp.addVni(VNI, true);
      dp.start();
      const port = dp.addPort({ id: 'p', mac, vni: VNI, fd: io.tap(), ifname: 'eth0', mtu: 1422, vnetHdr: true });
      const sec = new VnetSec();
      fdb.setSec(VNI, sec);
      return { io, fdb, dp, port, udpFd, sec, self };
    };
    const a = mk(A, MAC_A);
    const b = mk(B, MAC_B);
    a.fdb.set(VNI, MAC_B, 'kv', { vtep: B, port: 4789 });
    b.fdb.set(VNI, MAC_A, 'kv', { vtep: A, port: 4789 });
    a.sec.tx = new TxKey(SLOT_A, 1);
    b.sec.rx.set(A | 0, [new RxKey(SLOT_B_RX, 1)]);
    const payload = new Uint8Array(40000).map((_, i) => (i * 13) & 0xff);
    a.io.tapIn.get(a.port.fd)!.push(superFrame(payload));
    a.io.ready(a.port.fd);
    const segs = Math.ceil(40000 / 1370);
    assert.equal(a.dp.counters.tx_sealed, segs, 'each segment sealed on its own');
    assert.equal(a.io.sent.length, 1, 'one UDP GSO send');
    const send = a.io.sent[0];
    assert.equal(send.gso, 8 + 12 + 14 + 20 + 20 + 1370 + 16, 'equal sealed segments at the stride');
    for (let o = 0; o < send.data.length; o += send.gso!) assert.equal(send.data[o], SEALED_FLAGS);
    // the receiving kernel's UDP GRO hands the send over as one buffer of datagrams of that size
    b.io.udpIn.get(b.udpFd)!.push({ data: send.data, addr: A, port: 51000, gso: send.gso });
    b.io.ready(b.udpFd);
    assert.equal(b.dp.counters.rx_opened, segs);
    assert.equal(b.dp.counters.totalDrops(), 0);
    const out = b.io.tapOut.get(b.port.fd)!;
    assert.equal(out.length, 1, 'merged into one super-frame');
    assert.equal(out[0][1], 1, 'GSO TCPV4');
    assert.deepEqual(Buffer.from(out[0].subarray(10 + 14 + 40)), Buffer.from(payload), 'the payload, byte-exact');
    assert.equal(b.dp.counters.rx_bytes, send.data.length, 'bytes counted as they were on the wire');
    assert.equal(b.dp.rx.open?.compacted[0], 1, 'taken as one plain GRO buffer (Gro.run), not segment by segment');
  } finally {
    n.aeadDrop(SLOT_A);
    n.aeadDrop(SLOT_B_RX);
  }
});
