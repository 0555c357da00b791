/**
 * MAC addresses. The data plane keys tables by a MAC as a plain number (48 bits fit a double exactly), read
 * straight from the frame: no string, no allocation per packet.
 */
import { randomBytes } from 'node:crypto';

export const MAC_ZERO = 0; // the all-zeros "default destination" entry that holds the flood list
export const MAC_BROADCAST = 0xffffffffffff;
const TWO32 = 0x100000000;

/** Reads the MAC at buf[off..off+6] as a number. */
export function readMac(buf: Uint8Array, off: number): number {
  return (
    ((buf[off] << 8) | buf[off + 1]) * TWO32 +
    ((buf[off + 2] << 24) >>> 0) +
    ((buf[off + 3] << 16) | (buf[off + 4] << 8) | buf[off + 5])
  );
}

/** Writes a numeric MAC at buf[off..off+6]. */
export function writeMac(mac: number, buf: Uint8Array, off: number): void {
  const hi = Math.floor(mac / TWO32);
  const lo = mac >>> 0;
  buf[off] = hi >>> 8;
  buf[off + 1] = hi & 0xff;
  buf[off + 2] = lo >>> 24;
  buf[off + 3] = (lo >>> 16) & 0xff;
  buf[off + 4] = (lo >>> 8) & 0xff;
  buf[off + 5] = lo & 0xff;
}

/** True for group addresses (broadcast and multicast): the I/G bit, lowest bit of the first octet. */
export function isGroupMac(buf: Uint8Array, off: number): boolean {
  return (buf[off] & 0x01) !== 0;
}

export function isGroupMacNum(mac: number): boolean {
  return (Math.floor(mac / 0x10000000000) & 0x01) !== 0;
}

const MAC_RE = /^([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2}):([0-9a-f]{2})$/i;

/** Parses "aa:bb:cc:dd:ee:ff"; throws a TypeError that says what is expected. */
export function parseMac(s: string): number {
  const m = MAC_RE.exec(s.trim());
  if (!m) throw new TypeError(`invalid MAC address ${JSON.stringify(s)}: expected six hex octets like 02:42:c6:13:01:02`);
  let v = 0;
  for (let i = 1; i <= 6; i++) v = v * 256 + parseInt(m[i], 16);
  return v;
}

export function formatMac(mac: number): string {
  const b = new Uint8Array(6);
  writeMac(mac, b, 0);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');
}

/** A random unicast, locally administered MAC (02:xx:..), as the kernel's eth_random_addr makes. */
export function randomMac(): number {
  const b = randomBytes(6);
  b[0] = (b[0] & 0xfe) | 0x02;
  return readMac(b, 0);
}
