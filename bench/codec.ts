/**
 * Codec and table microbenchmarks with benny: operations per second of what the hot path does per packet.
 * Where an optimisation is made, its old version stays here beside the new one (see "flow hash" below).
 *
 *   node dist/bench/codec.js      -> bench/results/codec.{json,csv} and a table on stdout
 */
import b from 'benny';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Fdb } from '../src/fdb/fdb.js';
import { flowHash } from '../src/vxlan/flowhash.js';
import { readMac } from '../src/vxlan/mac.js';
import { readVni, vxlanFlagsValid, writeVxlanHeader, vxlan } from '../src/vxlan/vxlan.js';
import { ethernet } from '../src/vxlan/ethernet.js';
import { ipv4 } from '../src/vxlan/ipv4.js';
import { internetChecksum, sum16 as sum16js } from '../src/vxlan/checksum.js';
import { tsoSplitJs } from '../src/vxlan/gso.js';
import { sampleTcpV4Frame, sampleUdpFrame } from '../src/vxlan/samples.js';
import { groSegmentJs } from '../src/dataplane/gro.js';
import { native } from '../src/sys/native.js';
import { ipv4Frame } from '../test/helpers/frames.js';
import { createHash } from 'node:crypto';

const OUT = resolve(fileURLToPath(import.meta.url), '../../../bench/results');
const frame = ipv4Frame(0x020000000002, 0x020000000001, { size: 1464, proto: 6, sport: 40000, dport: 80 });
const buf = new Uint8Array(2048);
const big = new Uint8Array(65536).map((_, i) => (i * 131 + 7) & 0xff);
const nativeSum16 = native().sum16;
const { tsoSplit: nativeTso, groSegment: nativeGro } = native();
// TSO: a 64 KB super-frame (45 segments of 1448) split in an arena; GRO: one 1448-byte segment against a pending frame
const superFrame = sampleTcpV4Frame(65_000);
const tsoArena = new Uint8Array(superFrame.length + 45 * (8 + 66 + 1448) + 4096);
tsoArena.set(superFrame, 0);
const tsoOut = new Int32Array(3);
const seg = sampleTcpV4Frame(1448);
const groArena = new Uint8Array(3 * 1600);
groArena.set(seg, 0);
groArena.set(seg, 1600);
// UDP GRO (entry 16): one 1400-byte datagram of the pending super-frame's flow
const dgram = sampleUdpFrame(1400);
const udpArena = new Uint8Array(3 * 1600);
udpArena.set(dgram, 0);
udpArena.set(dgram, 1600);
buf.set(frame, 64);
const fdb = new Fdb();
const v = fdb.addVni(4097);
for (let i = 0; i < 10_000; i++) fdb.set(4097, 0x020000000000 + i, 'kv', { vtep: 0xc6120002, port: 4789 });
// the FDB before entry 9 kept entries in a Map keyed by the MAC as one number (boxed on every lookup)
const oldTable = new Map<number, { vtep: number }>();
for (let i = 0; i < 10_000; i++) oldTable.set(0x020000000000 + i, { vtep: 0xc6120002 });
const macFrame = new Uint8Array([0x02, 0, 0, 0, 0, 0]);
let sink = 0;

/** The first sum16: two bytes per iteration (kept as the "old" side of the checksum comparison). */
function sum16Bytewise(buf: Uint8Array, start: number, end: number): number {
  let s = 0;
  let i = start;
  const last = end - 1;
  for (; i < last; i += 2) s += (buf[i] << 8) | buf[i + 1];
  if (i === last) s += buf[i] << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/** The obvious flow hash (string key through a crypto hash), kept as the "old" side of the comparison. */
function flowHashNaive(f: Uint8Array): number {
  const key = `${f[26]}.${f[27]}.${f[28]}.${f[29]}-${f[30]}.${f[31]}.${f[32]}.${f[33]}-${f[23]}-${(f[34] << 8) | f[35]}-${(f[36] << 8) | f[37]}`;
  return createHash('md5').update(key).digest().readUInt32BE(0);
}

await b.suite(
  'vxtap per-packet operations',
  b.add('encap: write VXLAN header into headroom', () => {
    writeVxlanHeader(buf, 56, 4097);
  }),
  b.add('decap: flags check + VNI', () => {
    sink += vxlanFlagsValid(buf, 56) ? readVni(buf, 56) : 0;
  }),
  b.add('read a MAC as a number', () => {
    sink += readMac(buf, 64);
  }),
  b.add('FDB lookup from the frame, 10k entries (new: lookupAt, MAC read in place, entry 9)', () => {
    macFrame[5] = sink & 0xff;
    macFrame[4] = (sink >>> 8) & 0x1f;
    sink += fdb.lookupAt(v, macFrame, 0, 0)?.vtep ?? 0;
  }),
  b.add('FDB lookup from the frame, 10k entries (old: readMac + Map keyed by the 48-bit number)', () => {
    macFrame[5] = sink & 0xff;
    macFrame[4] = (sink >>> 8) & 0x1f;
    sink += oldTable.get(readMac(macFrame, 0))?.vtep ?? 0;
  }),
  b.add('flow hash (new: murmur-style over header words)', () => {
    sink += flowHash(buf, 64, 64 + 1464);
  }),
  b.add('flow hash (old: string key + md5)', () => {
    sink += flowHashNaive(frame);
  }),
  b.add('codec: decode VXLAN + Ethernet + IPv4 views', () => {
    const h = vxlan.decode(buf, 56);
    const e = ethernet.decode(buf, 64, 64 + 1464);
    const ip = ipv4.decode(e.payload, 0);
    sink += h.vni + ip.ttl;
  }),
  b.add('IPv4 header checksum (20 bytes)', () => {
    sink += internetChecksum(buf, 78, 98);
  }),
  b.add("sum16 over 1448 bytes (newest: native, the data plane's since entry 7)", () => {
    sink += nativeSum16(buf, 80, 80 + 1448, 0);
  }),
  b.add('sum16 over 1448 bytes (new: JS, 8 bytes per iteration, entries 5-6)', () => {
    sink += sum16js(buf, 80, 80 + 1448);
  }),
  b.add('sum16 over 1448 bytes (old: JS, 2 bytes per iteration)', () => {
    sink += sum16Bytewise(buf, 80, 80 + 1448);
  }),
  b.add('sum16 over a 64 KB super-frame (native)', () => {
    sink += nativeSum16(big, 0, 65536, 0);
  }),
  b.add('sum16 over a 64 KB super-frame (JS)', () => {
    sink += sum16js(big, 0, 65536);
  }),
  b.add('TSO: 64 KB super-frame -> 45 VXLAN frames (new: native tsoSplit, entry 9)', () => {
    sink += nativeTso(tsoArena, 0, superFrame.length, 1448, superFrame.length + 64, 8, 4097, tsoOut);
  }),
  b.add('TSO: 64 KB super-frame -> 45 VXLAN frames (JS reference: JS split and sums)', () => {
    sink += tsoSplitJs(tsoArena, 0, superFrame.length, 1448, superFrame.length + 64, 8, 4097, tsoOut);
  }),
  b.add('GRO: check + append one 1448-byte segment (new: native groSegment, entry 9)', () => {
    sink += nativeGro(groArena, 1600, seg.length, 54, 0, 3200);
  }),
  b.add('GRO: check + append one 1448-byte segment (JS reference: JS compare, copy and sum)', () => {
    sink += groSegmentJs(groArena, 1600, seg.length, 54, 0, 3200);
  }),
  b.add(
    'UDP GRO: check + append one 1400-byte datagram (native groSegment, entry 16; instead of one TAP write each)',
    () => {
      sink += nativeGro(udpArena, 1600, dgram.length, 42, 0, 3200);
    },
  ),
  b.add('UDP GRO: check + append one 1400-byte datagram (JS groSegmentJs)', () => {
    sink += groSegmentJs(udpArena, 1600, dgram.length, 42, 0, 3200);
  }),
  b.cycle(),
  b.complete((s) => {
    console.log('\n| operation | ops/s | margin |\n|---|---|---|');
    for (const r of s.results) console.log(`| ${r.name} | ${Math.round(r.ops).toLocaleString('en')} | ±${r.margin}% |`);
  }),
  b.save({ file: 'codec', folder: OUT, format: 'json' }),
  b.save({ file: 'codec', folder: OUT, format: 'csv' }),
);
if (sink === 42) console.log('');
