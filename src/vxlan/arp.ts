/**
 * ARP for Ethernet and IPv4 (RFC 826): the only kind the overlay answers or inspects. The codec for the control
 * side and tests, and the two in-place steps the data plane uses to answer a request for a known address.
 */
import {
  ARP_HLEN,
  ARP_OFF_HLEN,
  ARP_OFF_HTYPE,
  ARP_OFF_OPER,
  ARP_OFF_PLEN,
  ARP_OFF_PTYPE,
  ARP_OFF_SHA,
  ARP_OFF_SPA,
  ARP_OFF_THA,
  ARP_OFF_TPA,
  ARPHRD_ETHER,
  ARPOP_REPLY,
  ARPOP_REQUEST,
  ETH_ALEN,
  ETH_HLEN,
  ETH_OFF_DST,
  ETH_OFF_SRC,
  ETH_P_IP,
} from './constants.js';
import { readU16, readU32, writeU16, writeU32 } from './ethernet.js';
import { type Codec, DecodeError, need } from './errors.js';
import { writeMac } from './mac.js';

export interface ArpPacket {
  op: number;
  sha: Uint8Array; // sender hardware address (view)
  spa: number; // sender IPv4, host-order uint32
  tha: Uint8Array;
  tpa: number;
}

export const arp: Codec<ArpPacket> = {
  encodingLength: () => ARP_HLEN,
  encode(p, buf, off) {
    need('arp', buf, off, ARP_HLEN);
    writeU16(buf, off + ARP_OFF_HTYPE, ARPHRD_ETHER);
    writeU16(buf, off + ARP_OFF_PTYPE, ETH_P_IP);
    buf[off + ARP_OFF_HLEN] = 6;
    buf[off + ARP_OFF_PLEN] = 4;
    writeU16(buf, off + ARP_OFF_OPER, p.op);
    buf.set(p.sha.subarray(0, 6), off + ARP_OFF_SHA);
    writeU32(buf, off + ARP_OFF_SPA, p.spa);
    buf.set(p.tha.subarray(0, 6), off + ARP_OFF_THA);
    writeU32(buf, off + ARP_OFF_TPA, p.tpa);
    return ARP_HLEN;
  },
  decode(buf, off, end = buf.length) {
    need('arp', buf, off, ARP_HLEN, end);
    if (
      readU16(buf, off + ARP_OFF_HTYPE) !== ARPHRD_ETHER ||
      readU16(buf, off + ARP_OFF_PTYPE) !== ETH_P_IP ||
      buf[off + ARP_OFF_HLEN] !== 6 ||
      buf[off + ARP_OFF_PLEN] !== 4
    ) {
      throw new DecodeError('ERR_MALFORMED', 'arp: not Ethernet/IPv4 (htype 1, ptype 0x0800, hlen 6, plen 4)');
    }
    return {
      op: readU16(buf, off + ARP_OFF_OPER),
      sha: buf.subarray(off + ARP_OFF_SHA, off + ARP_OFF_SHA + 6),
      spa: readU32(buf, off + ARP_OFF_SPA),
      tha: buf.subarray(off + ARP_OFF_THA, off + ARP_OFF_THA + 6),
      tpa: readU32(buf, off + ARP_OFF_TPA),
    };
  },
};

/**
 * The target address of the Ethernet/IPv4 ARP request in the frame at buf[off..] (host order), or -1 if the frame
 * holds none. The caller has checked that the frame is ETH_HLEN + ARP_HLEN bytes or more.
 */
export function arpRequestTarget(buf: Uint8Array, off: number): number {
  const a = off + ETH_HLEN;
  if (
    readU16(buf, a + ARP_OFF_OPER) !== ARPOP_REQUEST ||
    readU16(buf, a + ARP_OFF_HTYPE) !== ARPHRD_ETHER ||
    readU16(buf, a + ARP_OFF_PTYPE) !== ETH_P_IP ||
    buf[a + ARP_OFF_HLEN] !== ETH_ALEN ||
    buf[a + ARP_OFF_PLEN] !== 4
  ) {
    return -1;
  }
  return readU32(buf, a + ARP_OFF_TPA);
}

/**
 * Rewrites the ARP request frame at buf[off..] in place into the reply from `mac`, the owner of its target
 * address: back to the requester, sender := (mac, target address), target := the requester. Same length.
 */
export function arpReplyInPlace(buf: Uint8Array, off: number, mac: number): void {
  const a = off + ETH_HLEN;
  const tpa = readU32(buf, a + ARP_OFF_TPA);
  buf.copyWithin(off + ETH_OFF_DST, off + ETH_OFF_SRC, off + ETH_OFF_SRC + ETH_ALEN); // to the requester
  writeMac(mac, buf, off + ETH_OFF_SRC);
  writeU16(buf, a + ARP_OFF_OPER, ARPOP_REPLY);
  buf.copyWithin(a + ARP_OFF_THA, a + ARP_OFF_SHA, a + ARP_OFF_SHA + ETH_ALEN + 4); // target := sender (MAC + IPv4)
  writeMac(mac, buf, a + ARP_OFF_SHA);
  writeU32(buf, a + ARP_OFF_SPA, tpa);
}
