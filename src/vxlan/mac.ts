/**
 * MAC addresses. The data plane keys tables by a MAC as a plain number (48 bits fit a double exactly), read
 * straight from the frame: no string, no allocation per packet.
 */
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

function hexDigit(c: number): number {
  if (c >= 48 && c <= 57) return c - 48; // 0-9
  const l = c | 0x20; // A-F -> a-f
  return l >= 97 && l <= 102 ? l - 87 : -1;
}

/** Parses "aa:bb:cc:dd:ee:ff" (either case, surrounding white space ignored); throws a TypeError that says what
 * is expected. A character loop, not a regular expression: the control plane parses one per endpoint record. */
export function parseMac(s: string): number {
  const t = s.trim();
  let v = 0;
  let ok = t.length === 17;
  for (let i = 0; ok && i < 6; i++) {
    const hi = hexDigit(t.charCodeAt(i * 3));
    const lo = hexDigit(t.charCodeAt(i * 3 + 1));
    if (hi < 0 || lo < 0 || (i < 5 && t.charCodeAt(i * 3 + 2) !== 58))
      ok = false; // 58 ':'
    else v = v * 256 + hi * 16 + lo;
  }
  if (!ok)
    throw new TypeError(`invalid MAC address ${JSON.stringify(s)}: expected six hex octets like 02:42:c6:13:01:02`);
  return v;
}

export function formatMac(mac: number): string {
  const b = new Uint8Array(6);
  writeMac(mac, b, 0);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join(':');
}
