/** Builders for test frames, using the codec under test only where it is not what is being tested. */
import { ETH_P_ARP, ETH_P_IP, IPPROTO_TCP, IPPROTO_UDP } from '../../src/vxlan/constants.js';
import { randomBytes } from 'node:crypto';
import { readMac, writeMac } from '../../src/vxlan/mac.js';
import { writeU16, writeU32 } from '../../src/vxlan/ethernet.js';
import { ipv4 } from '../../src/vxlan/ipv4.js';
import { tcp } from '../../src/vxlan/tcp.js';

export function macBytes(mac: number): Uint8Array {
  const b = new Uint8Array(6);
  writeMac(mac, b, 0);
  return b;
}

/** An Ethernet frame dst <- src carrying an IPv4 packet (proto, ports) padded to `size` bytes. */
export function ipv4Frame(
  dst: number,
  src: number,
  opts: { size?: number; srcIp?: number; dstIp?: number; proto?: number; sport?: number; dport?: number } = {},
): Uint8Array {
  const size = Math.max(opts.size ?? 98, 14 + 20 + 4);
  const f = new Uint8Array(size);
  writeMac(dst, f, 0);
  writeMac(src, f, 6);
  writeU16(f, 12, ETH_P_IP);
  f[14] = 0x45;
  writeU16(f, 16, size - 14);
  f[22] = 64;
  f[23] = opts.proto ?? IPPROTO_UDP;
  writeU32(f, 26, opts.srcIp ?? 0xc6130102);
  writeU32(f, 30, opts.dstIp ?? 0xc6130103);
  if ((opts.proto ?? IPPROTO_UDP) === IPPROTO_UDP || opts.proto === IPPROTO_TCP) {
    writeU16(f, 34, opts.sport ?? 1000);
    writeU16(f, 36, opts.dport ?? 2000);
  }
  return f;
}

export function arpRequest(src: number, spa: number, tpa: number): Uint8Array {
  const f = new Uint8Array(42);
  writeMac(0xffffffffffff, f, 0);
  writeMac(src, f, 6);
  writeU16(f, 12, ETH_P_ARP);
  writeU16(f, 14, 1);
  writeU16(f, 16, ETH_P_IP);
  f[18] = 6;
  f[19] = 4;
  writeU16(f, 20, 1);
  writeMac(src, f, 22);
  writeU32(f, 28, spa);
  writeU32(f, 38, tpa);
  return f;
}

/** A VXLAN datagram payload: flags, VNI, inner frame. */
export function vxlanDatagram(vni: number, inner: Uint8Array, flags = 0x08): Uint8Array {
  const d = new Uint8Array(8 + inner.length);
  d[0] = flags;
  d[4] = vni >>> 16;
  d[5] = (vni >>> 8) & 0xff;
  d[6] = vni & 0xff;
  d.set(inner, 8);
  return d;
}

/** A random unicast, locally administered MAC (02:xx:..), as the kernel's eth_random_addr makes. */
export function randomMac(): number {
  const b = randomBytes(6);
  b[0] = (b[0] & 0xfe) | 0x02;
  return readMac(b, 0);
}

/**
 * A TCP/IPv4 super-frame as a TAP with offloads hands it over: virtio-net header (GSO type, gso_size) + Ethernet
 * + IPv4 (DF, id 7) + TCP (40000 -> 5201, seq 1000) + payload, checksums left zero (the split computes them).
 */
export function tcpSuperFrame(
  payload: Uint8Array,
  o: {
    dstMac: number;
    srcMac: number;
    src: number;
    dst: number;
    gsoSize: number;
    gsoType?: number;
    flags?: number;
    tos?: number;
  },
): Uint8Array {
  const t = new Uint8Array(20 + payload.length);
  tcp.encode(
    {
      sport: 40000,
      dport: 5201,
      seq: 1000,
      ack: 1,
      flags: o.flags ?? 0x18,
      window: 500,
      checksum: 0,
      urgent: 0,
      options: new Uint8Array(0),
      payload,
    },
    t,
    0,
  );
  const ip = new Uint8Array(20 + t.length);
  ipv4.encode(
    {
      tos: o.tos ?? 0,
      id: 7,
      df: true,
      mf: false,
      fragOffset: 0,
      ttl: 64,
      proto: 6,
      checksum: 0,
      src: o.src,
      dst: o.dst,
      options: new Uint8Array(0),
      payload: t,
    },
    ip,
    0,
  );
  const f = new Uint8Array(10 + 14 + ip.length);
  f[1] = o.gsoType ?? 1; // VIRTIO_NET_HDR_GSO_TCPV4
  f[4] = o.gsoSize & 0xff;
  f[5] = o.gsoSize >> 8;
  f.set(macBytes(o.dstMac), 10);
  f.set(macBytes(o.srcMac), 16);
  f[22] = 0x08;
  f.set(ip, 24);
  return f;
}
