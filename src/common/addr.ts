/** Subnets for overlay networks: IPv4 parsed once with ip-address, then plain uint32 arithmetic; IPv6 (dual stack)
 * as bigints. */
import { Address4 } from 'ip-address';
import { formatIpv4, parseIpv4 } from '../vxlan/ipv4.js';
import { bigIntToIpv6, formatIpv6, ipv6ToBigInt, parseIpv6 } from '../vxlan/ipv6.js';
import { invalid } from './errors.js';

export interface Subnet {
  cidr: string; // normalised, e.g. 198.19.1.0/24
  network: number;
  prefix: number;
  broadcast: number;
}

export function parseSubnet(cidr: string): Subnet {
  if (typeof cidr !== 'string' || !cidr.includes('/'))
    throw invalid(`subnet ${JSON.stringify(cidr)} must be in CIDR form, e.g. 198.19.1.0/24`);
  let a: Address4;
  try {
    a = new Address4(cidr);
  } catch {
    throw invalid(`subnet ${JSON.stringify(cidr)} is not a valid IPv4 CIDR, e.g. 198.19.1.0/24`);
  }
  const prefix = a.subnetMask;
  if (!Number.isInteger(prefix) || prefix < 8 || prefix > 30)
    throw invalid(`subnet ${cidr}: prefix length must be /8 to /30`);
  const network = parseIpv4(a.startAddress().correctForm());
  const host = parseIpv4(a.correctForm());
  if (host !== network)
    throw invalid(`subnet ${cidr} has host bits set; did you mean ${formatIpv4(network)}/${prefix}?`);
  const size = 2 ** (32 - prefix);
  return { cidr: `${formatIpv4(network)}/${prefix}`, network, prefix, broadcast: (network + size - 1) >>> 0 };
}

export function parseAddress(s: string, what = 'address'): number {
  try {
    return parseIpv4(s);
  } catch {
    throw invalid(`${what} ${JSON.stringify(s)} is not an IPv4 address like 198.19.1.2`);
  }
}

export function inSubnet(ip: number, s: Subnet): boolean {
  return ip > s.network && ip < s.broadcast;
}

/** First usable host address not in `used`, or -1. */
export function firstFree(s: Subnet, used: Set<number>): number {
  for (let ip = s.network + 1; ip < s.broadcast; ip++) if (!used.has(ip >>> 0)) return ip >>> 0;
  return -1;
}

/** The default MAC of an endpoint: 02:76:a.b.c.d, unicast, locally administered, unique per address within a
 * network (as Docker's overlay derives them), so an address reused by a new endpoint keeps its MAC and stale ARP
 * caches elsewhere stay right. */
export function macForAddress(ip: number): number {
  return 0x0276 * 0x100000000 + (ip >>> 0);
}

/** An IPv6 subnet of an overlay network (dual stack): bigint arithmetic, in the control plane only. */
export interface Subnet6 {
  cidr: string; // normalised (RFC 5952), e.g. 2001:db8:1::/64
  network: bigint;
  prefix: number;
  /** The last address of the subnet (IPv6 has no broadcast: it is a host address). */
  last: bigint;
}

export function parseSubnet6(cidr: string): Subnet6 {
  const m = typeof cidr === 'string' ? /^([0-9a-fA-F:.]+)\/(\d{1,3})$/.exec(cidr) : null;
  if (!m) throw invalid(`IPv6 subnet ${JSON.stringify(cidr)} must be in CIDR form, e.g. 2001:db8:1::/64`);
  let a: bigint;
  try {
    a = ipv6ToBigInt(parseIpv6(m[1]));
  } catch {
    throw invalid(`IPv6 subnet ${JSON.stringify(cidr)} is not a valid IPv6 CIDR, e.g. 2001:db8:1::/64`);
  }
  const prefix = Number(m[2]);
  if (prefix < 48 || prefix > 120) throw invalid(`IPv6 subnet ${cidr}: prefix length must be /48 to /120`);
  const hostBits = BigInt(128 - prefix);
  const network = (a >> hostBits) << hostBits;
  if (network !== a)
    throw invalid(`IPv6 subnet ${cidr} has host bits set; did you mean ${formatAddress6(network)}/${prefix}?`);
  return { cidr: `${formatAddress6(network)}/${prefix}`, network, prefix, last: network + (1n << hostBits) - 1n };
}

export function parseAddress6(s: string, what = 'IPv6 address'): bigint {
  try {
    return ipv6ToBigInt(parseIpv6(s));
  } catch {
    throw invalid(`${what} ${JSON.stringify(s)} is not an IPv6 address like 2001:db8:1::2`);
  }
}

export function formatAddress6(v: bigint): string {
  return formatIpv6(bigIntToIpv6(v));
}

/** A host address of the subnet: not the subnet-router anycast address (the first), RFC 4291 2.6.1. */
export function inSubnet6(ip: bigint, s: Subnet6): boolean {
  return ip > s.network && ip <= s.last;
}

export function overlaps6(a: Subnet6, b: Subnet6): boolean {
  return a.network <= b.last && b.network <= a.last;
}

/**
 * The IPv6 address an endpoint gets by default on a dual-stack network: the IPv6 subnet plus the host part of its
 * IPv4 address (198.19.1.7 in 198.19.1.0/24 -> 2001:db8:1::7 in 2001:db8:1::/64). Unique wherever the IPv4
 * address is, which the store's claim already guarantees, and easy to read next to it; an explicit address
 * (`--ip6`) is claimed like an IPv4 one.
 */
export function ipv6ForIpv4(s6: Subnet6, ip: number, s4: Subnet): bigint {
  return s6.network + BigInt((ip - s4.network) >>> 0);
}

/** Whether every host index of the IPv4 subnet has a place in the IPv6 one (ipv6ForIpv4 stays inside it). */
export function fitsIpv4(s6: Subnet6, s4: Subnet): boolean {
  return 128 - s6.prefix >= 32 - s4.prefix;
}
