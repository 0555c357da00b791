/**
 * The AEAD of encrypted networks (native/crypto.c): AES-256-GCM over datagrams in place, a batch per call.
 * Known answer: Node's own AES-256-GCM reproduces test case 16 of the GCM specification (McGrew and Viega), and the
 * native batch must give the same bytes as Node for the datagram layout (AAD = the first 20 bytes, nonce = the
 * slot's salt + the counter at bytes 12-20, tag after the data). Then what must fail does, each in its own slot.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv, randomBytes } from 'node:crypto';
import { native } from '../../src/sys/native.js';

const n = native();
const { AEAD_TAG, AEAD_AAD, AEAD_STRIDE, EBADMSG } = n.constants;
const EINVAL = 22;
const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');

/** Node's seal of a datagram laid out as the native one expects: ciphertext and tag. */
function nodeSeal(key: Buffer, salt: Buffer, dgram: Buffer): Buffer {
  const c = createCipheriv('aes-256-gcm', key, Buffer.concat([salt, dgram.subarray(12, 20)]));
  c.setAAD(dgram.subarray(0, AEAD_AAD));
  return Buffer.concat([dgram.subarray(0, AEAD_AAD), c.update(dgram.subarray(AEAD_AAD)), c.final(), c.getAuthTag()]);
}

test('Node reproduces the GCM specification test case 16 (AES-256, 96-bit IV, AAD)', () => {
  const c = createCipheriv(
    'aes-256-gcm',
    hex('feffe9928665731c6d6a8f9467308308 feffe9928665731c6d6a8f9467308308'),
    hex('cafebabefacedbaddecaf888'),
  );
  c.setAAD(hex('feedfacedeadbeeffeedfacedeadbeef abaddad2'));
  const p = hex(`d9313225f88406e5a55909c5aff5269a 86a7a9531534f7da2e4c303d8a318a72
                 1c3c0c95956809532fcf0e2449a6b525 b16aedf5aa0de657ba637b39`);
  const ct = Buffer.concat([c.update(p), c.final()]);
  assert.equal(
    ct.toString('hex'),
    hex(`522dc1f099567d07f47f37a32a84427d 643a8cdcbfe5c0c97598a2bd2555d1aa
         8cb08e48590dbb3da7b08b1056828838 c5f61e6393ba7a0abcc9f662`).toString('hex'),
  );
  assert.equal(c.getAuthTag().toString('hex'), '76fc6ece0f4e1768cddf8853bb2d551b');
});

test('native seal equals Node for every length 0..300 and a full frame, and open gives the plaintext back', () => {
  const key = randomBytes(32);
  const salt = randomBytes(4);
  n.aeadKey(3, key, salt);
  for (const plain of [...Array.from({ length: 301 }, (_, i) => i), 1450 + 14]) {
    const dgram = randomBytes(AEAD_AAD + plain);
    const arena = new Uint8Array(4096);
    const off = 100 + (plain % 7); // any alignment
    arena.set(dgram, off);
    const d = Int32Array.of(off, dgram.length, 3);
    assert.equal(n.aeadSeal(arena, d, 1), 1);
    assert.equal(d[1], dgram.length + AEAD_TAG);
    assert.deepEqual(Buffer.from(arena.subarray(off, off + d[1])), nodeSeal(key, salt, dgram), `length ${plain}`);
    assert.equal(n.aeadOpen(arena, d, 1), 1);
    assert.equal(d[1], dgram.length);
    assert.deepEqual(Buffer.from(arena.subarray(off, off + d[1])), dgram);
  }
});

test('tampered, truncated, wrong-key and out-of-bounds datagrams fail in their own slots; the rest open', () => {
  const key = randomBytes(32);
  n.aeadKey(4, key, Buffer.from([0, 0, 0, 1]));
  n.aeadKey(5, randomBytes(32), Buffer.from([0, 0, 0, 1])); // another key, same salt
  const arena = new Uint8Array(16384);
  const S = AEAD_STRIDE;
  const sealAt = (off: number, len: number) => {
    arena.set(randomBytes(len), off);
    const d = Int32Array.of(off, len, 4);
    assert.equal(n.aeadSeal(arena, d, 1), 1);
    return d[1];
  };
  const cases: [string, number, number, number, (off: number, len: number) => void][] = [];
  const add = (name: string, slot: number, mut: (off: number, len: number) => void, delta = 0) => {
    const off = 1000 * (cases.length + 1);
    const len = sealAt(off, 200);
    cases.push([name, off, len + delta, slot, mut]);
  };
  add('intact', 4, () => {});
  add('VXLAN header (VNI) changed', 4, (o) => (arena[o + 5] ^= 1));
  add('counter changed', 4, (o) => (arena[o + 19] ^= 0x80));
  add('ciphertext bit flipped', 4, (o) => (arena[o + 100] ^= 4));
  add('tag changed', 4, (o, l) => (arena[o + l - 1] ^= 1));
  add('truncated by one byte', 4, () => {}, -1);
  add('another key', 5, () => {});
  add('intact too', 4, () => {});
  for (const [, off, len, , mut] of cases) mut(off, len);
  const d = new Int32Array(cases.length * S + 2 * S);
  cases.forEach(([, off, len, slot], i) => d.set([off, len, slot], i * S));
  d.set([16000, 1000, 4], cases.length * S); // past the arena's end
  d.set([0, AEAD_AAD + AEAD_TAG - 1, 4], (cases.length + 1) * S); // shorter than header + tag
  assert.equal(n.aeadOpen(arena, d, cases.length + 2), 2);
  const got = cases.map(([name], i) => `${name}: ${d[i * S + 1]}`);
  assert.deepEqual(got, [
    'intact: 200',
    `VXLAN header (VNI) changed: ${-EBADMSG}`,
    `counter changed: ${-EBADMSG}`,
    `ciphertext bit flipped: ${-EBADMSG}`,
    `tag changed: ${-EBADMSG}`,
    `truncated by one byte: ${-EBADMSG}`,
    `another key: ${-EBADMSG}`,
    'intact too: 200',
  ]);
  assert.equal(d[cases.length * S + 1], -EINVAL, 'outside the arena');
  assert.equal(d[(cases.length + 1) * S + 1], -EINVAL, 'too short');
  // a seal with no room for its tag, or an unknown slot, is refused the same way
  const e = Int32Array.of(arena.length - 100, 100, 4, 0, 100, 9999);
  assert.equal(n.aeadSeal(arena, e, 2), 0);
  assert.deepEqual([e[1], e[4]], [-EINVAL, -EINVAL]);
});

test('sealing speed, for the record (not asserted): 1464-byte frames, batches of 64', () => {
  n.aeadKey(6, randomBytes(32), randomBytes(4));
  const arena = new Uint8Array(64 * 2048);
  const d = new Int32Array(64 * AEAD_STRIDE);
  const len = AEAD_AAD + 1464;
  let bytes = 0;
  const t0 = process.hrtime.bigint();
  while (process.hrtime.bigint() - t0 < 300_000_000n) {
    for (let i = 0; i < 64; i++) d.set([i * 2048, len, 6], i * AEAD_STRIDE);
    n.aeadSeal(arena, d, 64);
    bytes += 64 * 1464;
  }
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  console.log(`# AES-256-GCM seal: ${((bytes * 8) / s / 1e9).toFixed(2)} Gbit/s of inner frames on one core`);
});
