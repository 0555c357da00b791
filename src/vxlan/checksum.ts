/** The Internet checksum (RFC 1071) and the IPv4/IPv6 pseudo-header sums used by UDP, TCP and ICMPv6. */

/**
 * Ones'-complement sum of buf[start..end) folded to 16 bits, added to `initial` (not complemented).
 * Eight bytes per iteration, folded once at the end: a double holds the running sum exactly (2^53 >> 64 KB of
 * 16-bit words), so no per-word carry handling is needed.
 */
export function sum16(buf: Uint8Array, start: number, end: number, initial = 0): number {
  let s = initial;
  let i = start;
  const last8 = end - 7;
  for (; i < last8; i += 8) {
    s +=
      ((buf[i] << 8) | buf[i + 1]) +
      ((buf[i + 2] << 8) | buf[i + 3]) +
      ((buf[i + 4] << 8) | buf[i + 5]) +
      ((buf[i + 6] << 8) | buf[i + 7]);
  }
  const last = end - 1;
  for (; i < last; i += 2) s += (buf[i] << 8) | buf[i + 1];
  if (i === last) s += buf[i] << 8;
  while (s > 0xffff) s = (s % 0x10000) + Math.floor(s / 0x10000);
  return s;
}

/** The contract of sum16, for faster versions of it (the native addon's; see src/dataplane/kernels.ts). */
export type Sum16 = (buf: Uint8Array, start: number, end: number, initial?: number) => number;

/** The checksum to store: the complement of the folded sum. */
export function finish(sum: number): number {
  let s = sum;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

/** The checksum of a header-sized span (IPv4 header, ICMP error): in JS, where a native call costs more than the sum. */
export function internetChecksum(buf: Uint8Array, start: number, end: number): number {
  return finish(sum16(buf, start, end));
}

/** Sum of the IPv4 pseudo-header (src, dst, zero, proto, length). Addresses are host-order uint32. */
export function pseudoSumV4(src: number, dst: number, proto: number, length: number): number {
  let s = (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + proto + length;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/**
 * Sum of the pseudo-header of the IPv6 header at buf[ip..] (its source and destination addresses, `proto`,
 * `length`), read in place: nothing is allocated, so the data plane can use it per super-frame.
 */
export function pseudoSumV6At(buf: Uint8Array, ip: number, proto: number, length: number): number {
  let s = sum16(buf, ip + 8, ip + 40) + (length >>> 16) + (length & 0xffff) + proto; // 8..40: the two addresses
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/** Sum of the IPv6 pseudo-header; src and dst are 16-byte views. */
export function pseudoSumV6(src: Uint8Array, dst: Uint8Array, proto: number, length: number): number {
  let s = sum16(src, 0, 16);
  s = sum16(dst, 0, 16, s);
  s += (length >>> 16) + (length & 0xffff) + proto;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}
