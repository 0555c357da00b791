/**
 * sendBatch on loopback (no root): a lone datagram (the sendto path of sparse traffic) arrives byte for byte, and
 * a descriptor the kernel can never take (a socket index outside the fds given, a range outside the arena) fails
 * in its own slot with -EINVAL while the others are sent, whether it is alone or in a batch.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket, type Socket } from 'node:dgram';
import { native } from '../../src/sys/native.js';

const LOOPBACK = 0x7f000001;
const EINVAL = 22;
let rx: Socket;
let rxPort = 0;
let fd = -1;
const got: Buffer[] = [];

before(async () => {
  rx = createSocket('udp4');
  rx.on('message', (m) => got.push(m));
  await new Promise<void>((r) => rx.bind(0, '127.0.0.1', r));
  rxPort = rx.address().port;
  [fd] = native().udpOpen(LOOPBACK, 0, 0, 0, false);
});

after(() => {
  if (fd >= 0) native().closeFd(fd);
  rx.close();
});

const STRIDE = native().constants.SEND_STRIDE; // sockIdx, off, len, ipv4, port, gsoSize

/** Waits until `n` datagrams have arrived (or 2 s passed) and returns them, emptying the list. */
async function received(n: number): Promise<Buffer[]> {
  for (let i = 0; i < 100 && got.length < n; i++) await new Promise((r) => setTimeout(r, 20));
  return got.splice(0);
}

test('a lone datagram goes out by the single-datagram path and arrives byte for byte', async () => {
  const arena = new Uint8Array(4096);
  const payload = Buffer.from('single datagram, sparse traffic');
  arena.set(payload, 100);
  const d = Int32Array.of(0, 100, payload.length, LOOPBACK, rxPort, 0);
  assert.equal(native().sendBatch(Int32Array.of(fd), arena, d, 1), 1);
  assert.equal(d[2], payload.length, 'the slot keeps its length: no error');
  const m = await received(1);
  assert.equal(m.length, 1);
  assert.deepEqual(m[0], payload);
});

test('a socket index outside fds fails with EINVAL in its own slot, alone or in a batch; the rest is sent', async () => {
  const arena = new Uint8Array(4096);
  for (let i = 0; i < 3; i++) arena.set(Buffer.from(`dgram-${i}`), i * 1000);
  // alone: never sent, and said so
  const one = Int32Array.of(1, 0, 7, LOOPBACK, rxPort, 0);
  assert.equal(native().sendBatch(Int32Array.of(fd), arena, one, 1), 0);
  assert.equal(one[2], -EINVAL);
  // in a batch: the middle one names socket 1 of a one-socket list
  const d = new Int32Array(3 * STRIDE);
  for (let i = 0; i < 3; i++) d.set([i === 1 ? 1 : 0, i * 1000, 7, LOOPBACK, rxPort, 0], i * STRIDE);
  assert.equal(native().sendBatch(Int32Array.of(fd), arena, d, 3), 2);
  assert.deepEqual([d[2], d[STRIDE + 2], d[2 * STRIDE + 2]], [7, -EINVAL, 7]);
  const m = (await received(2)).map((b) => b.toString()).sort();
  assert.deepEqual(m, ['dgram-0', 'dgram-2']);
});

test('a lone datagram past the arena fails with EINVAL and sends nothing', async () => {
  const arena = new Uint8Array(64);
  const d = Int32Array.of(0, 60, 10, LOOPBACK, rxPort, 0);
  assert.equal(native().sendBatch(Int32Array.of(fd), arena, d, 1), 0);
  assert.equal(d[2], -EINVAL);
  assert.equal((await received(1)).length, 0);
});
