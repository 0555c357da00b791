/**
 * Known answers from an independent implementation: the Linux kernel's own segmentation and checksums. Until this
 * test, vxtap's TSO/USO output was checked only against vxtap's own sums and splitter.
 *
 * In a test namespace, two TAPs on a bridge: "gin" is written with a virtio-net header (a super-frame asking for
 * TCP or UDP segmentation and checksum completion, as a guest or a TAP with offloads would hand it over); "gout"
 * has neither a virtio-net header nor offloads, so before the kernel gives it a frame it segments the super-frame
 * (software GSO) and fills in every checksum itself. The frames read from gout are the kernel's answer. vxtap's
 * segmentSuperFrame (the JS reference) and the native tsoSplit the data plane runs must produce them byte for
 * byte: IPv4 and IPv6, TCP and UDP, sequence numbers across 2^32, flags, IP IDs, lengths, checksums, odd lengths.
 *
 * The super-frames are written out by hand here, not with vxtap's codec, and the kernel's checksums are checked
 * with a plain RFC 1071 loop written here, so that neither side of the comparison is vxtap's code.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { writeSync } from 'node:fs';
import { native } from '../../src/sys/native.js';
import { createTap, type Tap } from '../../src/tap/tap.js';
import { segmentSuperFrame } from '../../src/vxlan/gso.js';
import { isRoot, must, poll, Topo } from '../helpers/topo.js';

const skip = isRoot() ? false : 'needs root (network namespaces, TAP devices)';
let topo: Topo;
let ns = '';
let gin: Tap;
let gout: Tap;

const SRC_MAC = [0x02, 0, 0, 0, 0xaa, 0x01];
const DST_MAC = [0x02, 0, 0, 0, 0xaa, 0x02];
const V4_SRC = [198, 19, 200, 1];
const V4_DST = [198, 19, 200, 2];
const V6_SRC = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const V6_DST = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const TCP = 6;
const UDP = 17;

/** RFC 1071, the textbook way: 16-bit words, end-around carry, one trailing byte padded with zero. */
function rfc1071(parts: number[][] | Buffer[]): number {
  const bytes = Buffer.concat(parts.map((p) => Buffer.from(p)));
  let s = 0;
  for (let i = 0; i < bytes.length; i += 2) {
    s += (bytes[i] << 8) | (i + 1 < bytes.length ? bytes[i + 1] : 0);
    s = (s & 0xffff) + (s >>> 16);
  }
  return s;
}
const be16 = (n: number) => [(n >>> 8) & 0xff, n & 0xff];

interface Case {
  name: string;
  v6: boolean;
  proto: number;
  payload: number;
  mss: number;
  /** TCP flags of the super-frame (FIN 1, PSH 8, ACK 16, CWR 128) */
  flags?: number;
}

/**
 * The super-frame as gin's writer hands it over: virtio-net header (NEEDS_CSUM, gso type and size, csum start and
 * offset) + Ethernet + IP + TCP (20 bytes + 12 of timestamp option) or UDP; the L4 checksum field holds the
 * pseudo-header sum only (not complemented), the contract of NEEDS_CSUM.
 */
function superFrame(c: Case, payload: Buffer): { vnet: Buffer; frame: Buffer; hdrs: number } {
  const tcp = c.proto === TCP;
  const l4len = (tcp ? 32 : 8) + payload.length;
  let ip: number[];
  let pseudo: number;
  if (!c.v6) {
    ip = [0x45, 0, ...be16(20 + l4len), 0xff, 0xfe, 0x40, 0, 64, c.proto, 0, 0, ...V4_SRC, ...V4_DST];
    const cs = ~rfc1071([ip]) & 0xffff;
    [ip[10], ip[11]] = be16(cs);
    pseudo = rfc1071([V4_SRC, V4_DST, [0, c.proto], be16(l4len)]);
  } else {
    ip = [0x61, 0x2a, 0xbc, 0xde, ...be16(l4len), c.proto, 64, ...V6_SRC, ...V6_DST];
    pseudo = rfc1071([V6_SRC, V6_DST, [0, 0], be16(l4len), [0, 0, 0, c.proto]]);
  }
  const l4 = tcp
    ? [
        ...be16(40000),
        ...be16(5201),
        0xff,
        0xff,
        0xf0,
        0x00, // seq 0xfffff000: the segments' sequence numbers wrap past 2^32
        0,
        0,
        0,
        77,
        0x80, // data offset 8 words
        c.flags ?? 0x18,
        ...be16(512),
        ...be16(pseudo),
        0,
        0,
        1,
        1,
        8,
        10,
        0,
        0,
        0,
        1,
        0,
        0,
        0,
        2,
      ]
    : [...be16(40000), ...be16(5201), ...be16(l4len), ...be16(pseudo)];
  const eth = [...DST_MAC, ...SRC_MAC, ...(c.v6 ? [0x86, 0xdd] : [0x08, 0x00])];
  const hdrs = eth.length + ip.length + l4.length;
  const ecn = tcp && (c.flags ?? 0) & 0x80 ? 0x80 : 0;
  const gsoType = (tcp ? (c.v6 ? 4 : 1) : 5) | ecn;
  const vnet = Buffer.alloc(10);
  vnet[0] = 1; // NEEDS_CSUM
  vnet[1] = gsoType;
  vnet.writeUInt16LE(hdrs, 2);
  vnet.writeUInt16LE(c.mss, 4);
  vnet.writeUInt16LE(eth.length + ip.length, 6); // csum_start
  vnet.writeUInt16LE(tcp ? 16 : 6, 8); // csum_offset
  return { vnet, frame: Buffer.concat([Buffer.from(eth), Buffer.from(ip), Buffer.from(l4), payload]), hdrs };
}

/** Frames gout received (no virtio-net header), waiting until `want` arrived or 5 s passed. */
async function readGout(want: number): Promise<Buffer[]> {
  const SLOT = 2048;
  const arena = new Uint8Array(SLOT * 64);
  const lens = new Int32Array(64);
  const got: Buffer[] = [];
  await poll(
    () => {
      const n = native().readBatch(gout.fd, arena, SLOT, 0, 64, lens);
      for (let i = 0; i < n; i++) got.push(Buffer.from(arena.subarray(i * SLOT, i * SLOT + lens[i])));
      return got.filter((f) => f.readUInt16BE(6) === 0x0200 && f.readUInt16BE(10) === 0xaa01).length;
    },
    (n) => n >= want,
    5000,
    5,
  );
  // only our frames: the namespace itself sends nothing (IPv6 is off), but be sure
  return got.filter((f) => f.readUInt16BE(6) === 0x0200 && f.readUInt16BE(10) === 0xaa01);
}

before(async () => {
  if (skip) return;
  topo = new Topo();
  ns = topo.ns('ka', { quiet: true });
  must(['ip', 'netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1']);
  must(['ip', 'netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv6.conf.default.disable_ipv6=1']);
  gin = await createTap({ ifname: 'gin', netns: ns, mac: 0x02_00_00_00_bb_01, mtu: 1500, vnetHdr: true });
  gout = await createTap({ ifname: 'gout', netns: ns, mac: 0x02_00_00_00_bb_02, mtu: 1500 });
  must(['ip', '-n', ns, 'link', 'add', 'br0', 'type', 'bridge', 'stp_state', '0']);
  for (const d of ['gin', 'gout']) must(['ip', '-n', ns, 'link', 'set', d, 'master', 'br0']);
  must(['ip', '-n', ns, 'link', 'set', 'br0', 'up']);
  // gout must really lack the offloads, or the kernel hands it the super-frame whole
  const feats = must(['ip', 'netns', 'exec', ns, 'ethtool', '-k', 'gout']);
  assert.match(feats, /^tcp-segmentation-offload: off/m, feats);
  assert.match(feats, /^tx-checksumming: off/m, feats);
});

after(async () => {
  if (skip) return;
  native().closeFd(gin.fd);
  native().closeFd(gout.fd);
  await topo.cleanup();
});

const CASES: Case[] = [
  {
    name: 'IPv4/TCP, FIN+PSH+CWR (ECN), 5000 B at MSS 1398',
    v6: false,
    proto: TCP,
    payload: 5000,
    mss: 1398,
    flags: 0x99,
  },
  { name: 'IPv4/TCP, an odd payload, 4001 B at MSS 1000', v6: false, proto: TCP, payload: 4001, mss: 1000 },
  { name: 'IPv4/TCP, an exact multiple, 2000 B at MSS 1000', v6: false, proto: TCP, payload: 2000, mss: 1000 },
  { name: 'IPv6/TCP, 4000 B at MSS 1378', v6: true, proto: TCP, payload: 4000, mss: 1378, flags: 0x19 },
  { name: 'IPv4/UDP (USO), 3001 B at 1000', v6: false, proto: UDP, payload: 3001, mss: 1000 },
  { name: 'IPv6/UDP (USO), 2500 B at 900', v6: true, proto: UDP, payload: 2500, mss: 900 },
];

for (const c of CASES) {
  test(`the kernel's segmentation of a super-frame, and vxtap's, are the same bytes: ${c.name}`, { skip }, async () => {
    const payload = randomBytes(c.payload);
    const { vnet, frame, hdrs } = superFrame(c, payload);
    const want = Math.ceil(c.payload / c.mss);
    writeSync(gin.fd, Buffer.concat([vnet, frame]));
    const kernel = await readGout(want);
    assert.equal(kernel.length, want, `the kernel made ${kernel.length} frames, expected ${want}`);

    // the kernel's frames are valid on their own terms (checked with the RFC 1071 loop above, not vxtap's sums)
    let seen = Buffer.alloc(0);
    for (const [i, f] of kernel.entries()) {
      const ipOff = 14;
      const l4 = ipOff + (c.v6 ? 40 : 20);
      const l4len = f.length - l4;
      if (!c.v6) assert.equal(rfc1071([f.subarray(ipOff, l4)]), 0xffff, `frame ${i}: IPv4 header checksum`);
      const pseudo = c.v6
        ? [f.subarray(ipOff + 8, ipOff + 40), Buffer.from([0, 0, ...be16(l4len), 0, 0, 0, c.proto])]
        : [f.subarray(ipOff + 12, ipOff + 20), Buffer.from([0, c.proto, ...be16(l4len)])];
      assert.equal(rfc1071([...pseudo, f.subarray(l4)]), 0xffff, `frame ${i}: L4 checksum over the pseudo-header`);
      seen = Buffer.concat([seen, f.subarray(hdrs)]); // hdrs: Ethernet + IP + L4 headers
    }
    assert.ok(seen.equals(payload), 'the segments carry the payload, in order');

    // vxtap's JS reference
    const out = new Uint8Array(want * (hdrs + c.mss) + 64);
    const r = segmentSuperFrame(frame, 0, frame.length, c.mss, out, 0, 0);
    assert.ok(r, 'segmentSuperFrame took the super-frame');
    assert.equal(r.count, want);
    for (let k = 0; k < want; k++) {
      const ours: Buffer = Buffer.from(out.subarray(k * r.stride, k === want - 1 ? r.total : (k + 1) * r.stride));
      assert.equal(ours.toString('hex'), kernel[k].toString('hex'), `frame ${k} differs from the kernel's`);
    }

    // the native tsoSplit the data plane runs: segments after 8-byte VXLAN prefixes, in the same buffer
    const tso = native().tsoSplit;
    const buf = new Uint8Array(frame.length + want * (8 + hdrs + c.mss) + 64);
    buf.set(frame, 0);
    const res = new Int32Array(3);
    const n = tso(buf, 0, frame.length, c.mss, frame.length, 8, 4097, res);
    assert.equal(n, want, 'native tsoSplit took the super-frame');
    for (let k = 0; k < want; k++) {
      const start = frame.length + k * res[1] + 8;
      const end = k === want - 1 ? frame.length + res[2] : frame.length + (k + 1) * res[1];
      assert.equal(
        Buffer.from(buf.subarray(start, end)).toString('hex'),
        kernel[k].toString('hex'),
        `native frame ${k} differs from the kernel's`,
      );
    }
  });
}
