/** Builders for test frames, using the codec under test only where it is not what is being tested. */
import { ETH_P_ARP, ETH_P_IP, IPPROTO_TCP, IPPROTO_UDP } from '../../src/vxlan/constants.js';
import { randomBytes } from 'node:crypto';
import { readMac, writeMac } from '../../src/vxlan/mac.js';
import { writeU16, writeU32 } from '../../src/vxlan/ethernet.js';

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
