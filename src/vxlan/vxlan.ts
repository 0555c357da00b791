/**
 * The VXLAN header (RFC 7348 section 5.1):
 *
 *   0                   1                   2                   3
 *   |R|R|R|R|I|R|R|R|            Reserved                           |
 *   |                VXLAN Network Identifier (VNI) |   Reserved    |
 *
 * Receive policy (same as Linux vxlan_rcv): the I flag must be set and no other flag bit may be, because a set
 * bit RFC 7348 does not define means an extension (GBP, GPE with a next-protocol field) whose payload we would
 * misread as Ethernet. The reserved 24 + 8 bits are ignored on receipt, as the RFC says.
 */
import { VXLAN_FLAG_I, VXLAN_HLEN, VXLAN_OFF_FLAGS, VXLAN_OFF_VNI, VXLAN_VNI_MAX } from './constants.js';
import { type Codec, DecodeError, need } from './errors.js';

export interface VxlanHeader {
  flags: number; // the whole flags octet
  vni: number;
}

/** Writes a valid VXLAN header (flags = I, reserved = 0) for `vni` at buf[off..off+8]. Hot path: no checks. */
export function writeVxlanHeader(buf: Uint8Array, off: number, vni: number): void {
  buf[off + VXLAN_OFF_FLAGS] = VXLAN_FLAG_I;
  buf[off + 1] = 0;
  buf[off + 2] = 0;
  buf[off + 3] = 0;
  buf[off + VXLAN_OFF_VNI] = vni >>> 16;
  buf[off + VXLAN_OFF_VNI + 1] = (vni >>> 8) & 0xff;
  buf[off + VXLAN_OFF_VNI + 2] = vni & 0xff;
  buf[off + 7] = 0;
}

/** The 24-bit VNI at buf[off + 4]. Hot path: no checks. */
export function readVni(buf: Uint8Array, off: number): number {
  return (buf[off + VXLAN_OFF_VNI] << 16) | (buf[off + VXLAN_OFF_VNI + 1] << 8) | buf[off + VXLAN_OFF_VNI + 2];
}

/** True when the flags octet is exactly the I flag (see the receive policy above). */
export function vxlanFlagsValid(buf: Uint8Array, off: number): boolean {
  return buf[off + VXLAN_OFF_FLAGS] === VXLAN_FLAG_I;
}

export function isValidVni(vni: number): boolean {
  return Number.isInteger(vni) && vni >= 1 && vni <= VXLAN_VNI_MAX;
}

export const vxlan: Codec<VxlanHeader> = {
  encodingLength: () => VXLAN_HLEN,
  encode(h, buf, off) {
    if (!Number.isInteger(h.vni) || h.vni < 0 || h.vni > VXLAN_VNI_MAX)
      throw new RangeError(`VNI ${h.vni} is not a 24-bit number`);
    need('vxlan', buf, off, VXLAN_HLEN);
    buf.fill(0, off, off + VXLAN_HLEN); // reserved bits are zero on transmission
    buf[off + VXLAN_OFF_FLAGS] = h.flags & 0xff;
    buf[off + VXLAN_OFF_VNI] = h.vni >>> 16;
    buf[off + VXLAN_OFF_VNI + 1] = (h.vni >>> 8) & 0xff;
    buf[off + VXLAN_OFF_VNI + 2] = h.vni & 0xff;
    return VXLAN_HLEN;
  },
  decode(buf, off, end = buf.length) {
    need('vxlan', buf, off, VXLAN_HLEN, end);
    const flags = buf[off + VXLAN_OFF_FLAGS];
    if (flags !== VXLAN_FLAG_I)
      throw new DecodeError('ERR_MALFORMED', `vxlan: flags 0x${flags.toString(16)} (want 0x08, I only)`);
    return { flags, vni: readVni(buf, off) };
  },
};
