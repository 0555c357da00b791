/**
 * Sample frames: Ethernet / IPv4 or IPv6 / TCP or UDP with a payload pattern and complete checksums. The data plane
 * checks its native kernels against their JS references on these before it uses them (src/dataplane/kernels.ts);
 * tests and the codec benchmark use them too.
 */
import {
  ETH_P_8021Q,
  IPPROTO_TCP,
  IPPROTO_UDP,
  IPV4_OFF_CSUM,
  IPV4_OFF_DST,
  IPV4_OFF_ID,
  IPV4_OFF_PROTO,
  IPV4_OFF_SRC,
  IPV4_OFF_TOT_LEN,
  IPV6_HLEN,
  IPV6_OFF_DST,
  IPV6_OFF_NEXT_HDR,
  IPV6_OFF_PAYLOAD_LEN,
  IPV6_OFF_SRC,
  TCP_OFF_CSUM,
  TCP_OFF_DOFF,
  TCP_OFF_FLAGS,
  TCP_OFF_SEQ,
  UDP_OFF_CSUM,
  UDP_OFF_LEN,
} from './constants.js';
import { finish, internetChecksum, pseudoSumV4, pseudoSumV6At, sum16 } from './checksum.js';
import { readU32, writeU16, writeU32 } from './ethernet.js';

/** The Ethernet header of a sample frame: unicast MACs from the seed (`mul` varies them by family), an 802.1Q tag
 * if `vlan`. Returns the header length. */
function sampleEthernet(
  f: Uint8Array,
  vlan: boolean | undefined,
  seed: number,
  mul: number,
  etherType: number,
): number {
  const l2 = vlan ? 18 : 14;
  for (let i = 0; i < 12; i++) f[i] = (i * mul + seed) & 0xff;
  f[0] &= 0xfe; // unicast
  if (vlan) {
    writeU16(f, 12, ETH_P_8021Q);
    writeU16(f, 14, 42);
  }
  writeU16(f, l2 - 2, etherType);
  return l2;
}

/** The TCP header (data offset `doff`: 20, or 32 with 12 option bytes) and payload pattern of a sample frame at
 * f[t..]; the checksum is the caller's (it needs the pseudo-header). */
function sampleTcp(f: Uint8Array, t: number, doff: number, seed: number, flags: number | undefined): void {
  writeU16(f, t, 40000 + seed);
  writeU16(f, t + 2, 5201);
  writeU32(f, t + TCP_OFF_SEQ, (0xfffff000 + seed * 7919) >>> 0);
  writeU32(f, t + 8, 0x12345678);
  f[t + TCP_OFF_DOFF] = (doff / 4) << 4;
  f[t + TCP_OFF_FLAGS] = flags ?? 0x10;
  writeU16(f, t + 14, 502);
  if (doff > 20) f.fill(1, t + 20, t + doff);
  samplePayload(f, t + doff, 31, seed * 7);
}

/** Fills f[from..] with a byte pattern. Its own function so that V8 compiles this loop on its own: compiled on
 * stack (OSR) inside a longer function, the loop's code was reused at every call and deoptimized each time on the
 * code after it (history.md entry 19). */
function samplePayload(f: Uint8Array, from: number, mul: number, add: number): void {
  for (let i = from; i < f.length; i++) f[i] = (i * mul + add) & 0xff;
}

/**
 * A test frame: Ethernet (+ 802.1Q tag if `vlan`) / IPv4 (ihl 5, or 6 with a NOP option) / TCP (data offset 5, or
 * 8 with 12 option bytes) / `payload` bytes of a pattern, checksums complete. Used to check native codec
 * functions against their JS references before the data plane uses them.
 */
export function sampleTcpV4Frame(
  payload: number,
  o: { vlan?: boolean; ipOpts?: boolean; tcpOpts?: boolean; flags?: number; seed?: number } = {},
): Uint8Array {
  const ihl = o.ipOpts ? 24 : 20;
  const doff = o.tcpOpts ? 32 : 20;
  const seed = o.seed ?? 1;
  const f = new Uint8Array((o.vlan ? 18 : 14) + ihl + doff + payload);
  const ip = sampleEthernet(f, o.vlan, seed, 17, 0x0800);
  f[ip] = 0x40 | (ihl / 4);
  f[ip + 1] = 0x10;
  writeU16(f, ip + IPV4_OFF_TOT_LEN, ihl + doff + payload);
  writeU16(f, ip + IPV4_OFF_ID, 0xfff0 + seed);
  f[ip + 6] = 0x40; // DF
  f[ip + 8] = 64;
  f[ip + IPV4_OFF_PROTO] = IPPROTO_TCP;
  writeU32(f, ip + IPV4_OFF_SRC, 0xc6130101);
  writeU32(f, ip + IPV4_OFF_DST, 0xc6130102 + seed);
  if (o.ipOpts) f.fill(1, ip + 20, ip + 24);
  writeU16(f, ip + IPV4_OFF_CSUM, internetChecksum(f, ip, ip + ihl));
  const t = ip + ihl;
  sampleTcp(f, t, doff, seed, o.flags);
  writeU16(
    f,
    t + TCP_OFF_CSUM,
    finish(sum16(f, t, f.length, pseudoSumV4(0xc6130101, 0xc6130102 + seed, IPPROTO_TCP, doff + payload))),
  );
  return f;
}

/**
 * The IPv6 counterpart of sampleTcpV4Frame: Ethernet (+ 802.1Q tag if `vlan`) / IPv6 (next header TCP, a flow
 * label, fe80:: addresses) / TCP (data offset 5, or 8 with 12 option bytes) / `payload` bytes of a pattern,
 * checksum complete.
 */
export function sampleTcpV6Frame(
  payload: number,
  o: { vlan?: boolean; tcpOpts?: boolean; flags?: number; seed?: number } = {},
): Uint8Array {
  const doff = o.tcpOpts ? 32 : 20;
  const seed = o.seed ?? 1;
  const f = new Uint8Array((o.vlan ? 18 : 14) + IPV6_HLEN + doff + payload);
  const ip = sampleEthernet(f, o.vlan, seed, 13, 0x86dd);
  writeU32(f, ip, (0x6 << 28) | (0x12 << 20) | ((0xabcde + seed) & 0xfffff));
  writeU16(f, ip + IPV6_OFF_PAYLOAD_LEN, doff + payload);
  f[ip + IPV6_OFF_NEXT_HDR] = IPPROTO_TCP;
  f[ip + 7] = 64;
  for (const [at, mul, add] of [
    [IPV6_OFF_SRC, 29, seed],
    [IPV6_OFF_DST, 37, seed * 3],
  ]) {
    f[ip + at] = 0xfe;
    f[ip + at + 1] = 0x80;
    for (let i = 8; i < 16; i++) f[ip + at + i] = (i * mul + add) & 0xff;
  }
  const t = ip + IPV6_HLEN;
  sampleTcp(f, t, doff, seed, o.flags);
  writeU16(f, t + TCP_OFF_CSUM, finish(sum16(f, t, f.length, pseudoSumV6At(f, ip, IPPROTO_TCP, doff + payload))));
  return f;
}

/**
 * A UDP super-datagram as a TAP with USO hands it over: Ethernet (+ 802.1Q tag if `vlan`) / IPv4 (ihl 5, or 6
 * with a NOP option) or IPv6 (`v6`) / UDP / `payload` bytes of a pattern, checksums complete.
 */
export function sampleUdpFrame(
  payload: number,
  o: { v6?: boolean; vlan?: boolean; ipOpts?: boolean; seed?: number } = {},
): Uint8Array {
  const seed = o.seed ?? 1;
  // the IP part of a TCP sample of the same shape, with its TCP header swapped for a UDP one
  const t = o.v6
    ? sampleTcpV6Frame(payload, { vlan: o.vlan, seed })
    : sampleTcpV4Frame(payload, { vlan: o.vlan, ipOpts: o.ipOpts, seed });
  const l2 = o.vlan ? 18 : 14;
  const ihl = o.v6 ? IPV6_HLEN : o.ipOpts ? 24 : 20;
  const f = t.subarray(0, t.length - 12); // TCP header (20) -> UDP header (8)
  const ip = l2;
  const u = ip + ihl;
  if (o.v6) {
    f[ip + IPV6_OFF_NEXT_HDR] = IPPROTO_UDP;
    writeU16(f, ip + IPV6_OFF_PAYLOAD_LEN, 8 + payload);
  } else {
    f[ip + IPV4_OFF_PROTO] = IPPROTO_UDP;
    writeU16(f, ip + IPV4_OFF_TOT_LEN, ihl + 8 + payload);
    writeU16(f, ip + IPV4_OFF_CSUM, 0);
    writeU16(f, ip + IPV4_OFF_CSUM, internetChecksum(f, ip, ip + ihl));
  }
  writeU16(f, u, 443);
  writeU16(f, u + 2, 50000 + seed);
  writeU16(f, u + UDP_OFF_LEN, 8 + payload);
  samplePayload(f, u + 8, 11, seed * 5);
  writeU16(f, u + UDP_OFF_CSUM, 0);
  const pseudo = o.v6
    ? pseudoSumV6At(f, ip, IPPROTO_UDP, 8 + payload)
    : pseudoSumV4(readU32(f, ip + IPV4_OFF_SRC), readU32(f, ip + IPV4_OFF_DST), IPPROTO_UDP, 8 + payload);
  const c = finish(sum16(f, u, f.length, pseudo));
  writeU16(f, u + UDP_OFF_CSUM, c === 0 ? 0xffff : c);
  return f.slice();
}
