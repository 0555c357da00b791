/** IPv4 subnets for overlay networks: parsed once with ip-address, then plain uint32 arithmetic. */
import { Address4 } from 'ip-address';
import { formatIpv4, parseIpv4 } from '../vxlan/ipv4.js';
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
