/** Ethernet II frames with an optional 802.1Q / 802.1ad tag. */
import {
  ETH_ALEN,
  ETH_HLEN,
  ETH_OFF_DST,
  ETH_OFF_SRC,
  ETH_OFF_TYPE,
  ETH_P_8021AD,
  ETH_P_8021Q,
  VLAN_HLEN,
  VLAN_OFF_TCI,
  VLAN_OFF_TYPE,
} from './constants.js';
import { type Codec, DecodeError, need } from './errors.js';

export interface EthernetFrame {
  dst: Uint8Array; // 6-byte view
  src: Uint8Array;
  /** 802.1Q tag control info (PCP/DEI/VID), or -1 for an untagged frame. */
  tci: number;
  /** The TPID of the tag (0x8100 or 0x88a8) when tagged. */
  tpid?: number;
  etherType: number;
  payload: Uint8Array; // view of the rest of the frame
}

export function readU16(buf: Uint8Array, off: number): number {
  return (buf[off] << 8) | buf[off + 1];
}

export function writeU16(buf: Uint8Array, off: number, v: number): void {
  buf[off] = (v >>> 8) & 0xff;
  buf[off + 1] = v & 0xff;
}

export function readU32(buf: Uint8Array, off: number): number {
  return ((buf[off] << 24) | (buf[off + 1] << 16) | (buf[off + 2] << 8) | buf[off + 3]) >>> 0;
}

export function writeU32(buf: Uint8Array, off: number, v: number): void {
  buf[off] = v >>> 24;
  buf[off + 1] = (v >>> 16) & 0xff;
  buf[off + 2] = (v >>> 8) & 0xff;
  buf[off + 3] = v & 0xff;
}

/** The EtherType after any VLAN tag, and where the payload starts; for frames already checked >= ETH_HLEN. */
export function ethInnerType(buf: Uint8Array, off: number, end: number): { type: number; l3: number } {
  const t = readU16(buf, off + ETH_OFF_TYPE);
  if ((t === ETH_P_8021Q || t === ETH_P_8021AD) && end - off >= ETH_HLEN + VLAN_HLEN) {
    return { type: readU16(buf, off + VLAN_OFF_TYPE), l3: off + ETH_HLEN + VLAN_HLEN };
  }
  return { type: t, l3: off + ETH_HLEN };
}

export const ethernet: Codec<EthernetFrame> = {
  encodingLength: (f) => ETH_HLEN + (f.tci >= 0 ? VLAN_HLEN : 0) + f.payload.length,
  encode(f, buf, off) {
    const len = ethernet.encodingLength(f);
    need('ethernet', buf, off, len);
    if (f.dst.length !== ETH_ALEN || f.src.length !== ETH_ALEN)
      throw new RangeError('ethernet: dst and src must be 6 bytes');
    buf.set(f.dst, off + ETH_OFF_DST);
    buf.set(f.src, off + ETH_OFF_SRC);
    let p = off + ETH_OFF_TYPE;
    if (f.tci >= 0) {
      writeU16(buf, p, f.tpid ?? ETH_P_8021Q);
      writeU16(buf, off + VLAN_OFF_TCI, f.tci);
      p = off + VLAN_OFF_TYPE;
    }
    writeU16(buf, p, f.etherType);
    buf.set(f.payload, p + 2);
    return len;
  },
  decode(buf, off, end = buf.length) {
    need('ethernet', buf, off, ETH_HLEN, end);
    const t = readU16(buf, off + ETH_OFF_TYPE);
    const frame: EthernetFrame = {
      dst: buf.subarray(off + ETH_OFF_DST, off + ETH_OFF_DST + ETH_ALEN),
      src: buf.subarray(off + ETH_OFF_SRC, off + ETH_OFF_SRC + ETH_ALEN),
      tci: -1,
      etherType: t,
      payload: buf.subarray(off + ETH_HLEN, end),
    };
    if (t === ETH_P_8021Q || t === ETH_P_8021AD) {
      need('ethernet 802.1Q tag', buf, off, ETH_HLEN + VLAN_HLEN, end);
      frame.tpid = t;
      frame.tci = readU16(buf, off + VLAN_OFF_TCI);
      frame.etherType = readU16(buf, off + VLAN_OFF_TYPE);
      frame.payload = buf.subarray(off + ETH_HLEN + VLAN_HLEN, end);
    }
    if (frame.etherType < 0x0600) {
      // 802.3 length field, not an EtherType: vxtap carries such frames but does not parse them.
      if (frame.etherType > frame.payload.length)
        throw new DecodeError(
          'ERR_MALFORMED',
          `ethernet: 802.3 length ${frame.etherType} > payload ${frame.payload.length}`,
        );
    }
    return frame;
  },
};
