/**
 * Sends datagrams with the agent's native sendBatch from inside a test namespace:
 *   node dist/test/helpers/sendbatch.js FROM_ADDR SPEC
 * SPEC is JSON: [[toAddr, toPort, length, count], ...]; the runs are queued in that order, datagram i of the
 * whole batch carrying "seqNNNNNN" then filler up to its length. Prints JSON: { sent, failed: [errno...],
 * coalesced: [messages, datagrams] } (coalesced: sendBatch's counters, this process only).
 */
import { native } from '../../src/sys/native.js';

const [from, spec] = process.argv.slice(2);
const ipv4 = (s: string) => s.split('.').reduce((a, b) => a * 256 + Number(b), 0);
const n = native();
const [fd] = n.udpOpen(ipv4(from), 0, 0, 4 << 20, false);
const runs = JSON.parse(spec) as [string, number, number, number][];
const total = runs.reduce((a, r) => a + r[3], 0);
const SLOT = 2048;
const arena = new Uint8Array(SLOT * total);
const STRIDE = n.constants.SEND_STRIDE;
const descs = new Int32Array(STRIDE * total);
let i = 0;
for (const [addr, port, len, count] of runs) {
  for (let k = 0; k < count; k++, i++) {
    const b = Buffer.from(arena.buffer, i * SLOT, len);
    b.fill(0x61 + (i % 26));
    Buffer.from(`seq${String(i).padStart(6, '0')}`).copy(b, 0);
    descs.set([0, i * SLOT, len, ipv4(addr) | 0, port, 0], i * STRIDE);
  }
}
const sent = n.sendBatch(Int32Array.of(fd), arena, descs, total);
const failed: number[] = [];
for (let k = 0; k < total; k++) if (descs[k * STRIDE + 2] < 0) failed.push(-descs[k * STRIDE + 2]);
console.log(JSON.stringify({ sent, failed, coalesced: n.coalesceStats() }));
