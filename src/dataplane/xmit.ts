/**
 * Transmit: container -> wire. The functions in this file run in the order a frame meets them:
 *
 *   1. read      one batch of frames from an endpoint's TAP into the xmit arena, each at HEADROOM in its slot
 *                (with offloads, each behind a virtio-net header: see src/vxlan/gso.ts)
 *   2. check     shorter than an Ethernet header -> drop (tx_short); offload header: a NEEDS_CSUM checksum is
 *                completed here, a TCP super-frame (TSO, IPv4 or IPv6) or UDP super-datagram (USO) is marked
 *                for splitting, anything else is
 *                tx_bad_offload
 *   3. source    source MAC must be unicast (tx_group_src_mac) and the endpoint's own: no spoofing of another
 *                container (tx_spoofed_src_mac); so must an IPv4 source (tx_spoofed_src_ip) and an ARP sender
 *                address (tx_spoofed_arp); a frame over the MTU is refused (tx_oversize), with ICMP
 *                "fragmentation needed" back for IPv4 with DF, or ICMPv6 "packet too big" for IPv6, so
 *                path-MTU discovery works
 *   4. arp       an ARP request for an overlay address the control plane knows is answered here, in place: the
 *                request's bytes become the reply and go back to the sender's TAP (never flooded across hosts)
 *   5. lookup    destination MAC in the VNI's FDB
 *                  local endpoint -> queue a TAP write (a frame back to its own sender is tx_hairpin)
 *                  remote VTEP    -> encap: write the 8-byte VXLAN header into the headroom, queue one datagram
 *                  group/unknown  -> flood: every other local endpoint of the VNI + every VTEP of the flood list
 *   6. flush     one writeBatch for the TAP writes, one sendBatch (sendmmsg per socket) for the datagrams
 *
 * A TSO super-frame goes to a local endpoint whole (its header intact: the receiving stack takes it as one
 * skb); towards VTEPs it is split into MSS-sized frames in the arena's GSO region, each behind its VXLAN header,
 * and each run of equal-sized datagrams is ONE sendmsg with UDP_SEGMENT: the kernel cuts it.
 *
 * The outer UDP source port comes from the inner flow hash (RFC 7348 section 5): it picks one of the agent's
 * transmit sockets, each bound to its own port, so a flow keeps one port and flows spread over ECMP/RSS.
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
  ETH_HLEN,
  ETH_OFF_DST,
  ETH_OFF_SRC,
  ETH_OFF_TYPE,
  ETH_P_ARP,
  ETH_P_IP,
  ETH_P_IPV6,
  ETH_P_8021Q,
  IPPROTO_ICMP,
  IPPROTO_ICMPV6,
  IPV6_HLEN,
  IPV6_OFF_DST,
  IPV6_OFF_NEXT_HDR,
  IPV6_OFF_PAYLOAD_LEN,
  IPV6_OFF_SRC,
  IPV4_FLAG_DF,
  IPV4_HLEN_MIN,
  IPV4_OFF_DST,
  IPV4_OFF_FRAG,
  IPV4_OFF_PROTO,
  IPV4_OFF_SRC,
  IPV4_OFF_VER_IHL,
  VLAN_HLEN,
  VXLAN_HLEN,
} from '../vxlan/constants.js';
import { finish, internetChecksum, pseudoSumV6At, sum16 } from '../vxlan/checksum.js';
import { readU16, readU32, writeU16, writeU32 } from '../vxlan/ethernet.js';
import { flowHash, pickIndex } from '../vxlan/flowhash.js';
import { isGroupMac, readMac, writeMac } from '../vxlan/mac.js';
import {
  finishChecksum,
  readU16le,
  tsoSplit,
  UDP_GSO_MAX_BYTES,
  UDP_GSO_MAX_SEGS,
  VNET_F_NEEDS_CSUM,
  VNET_GSO_ECN,
  VNET_GSO_NONE,
  VNET_GSO_TCPV4,
  VNET_GSO_TCPV6,
  VNET_GSO_UDP_L4,
  VNET_OFF_CSUM_OFFSET,
  VNET_OFF_CSUM_START,
  VNET_OFF_FLAGS,
  VNET_OFF_GSO_SIZE,
  VNET_OFF_GSO_TYPE,
} from '../vxlan/gso.js';
import type { Peer } from '../fdb/fdb.js';
import { writeVxlanHeader } from '../vxlan/vxlan.js';
import type { Dataplane } from './dataplane.js';
import type { Port } from './port.js';

/** Reads and forwards one batch from `port`'s TAP. Returns the number of frames read. */
export function xmit(dp: Dataplane, port: Port): number {
  const x = dp.x;
  const { arena, lens, out } = x;
  const c = dp.counters;
  // 1. read
  const n = dp.io.readBatch(port.fd, arena, dp.slotSize, dp.headroom, dp.batch, lens);
  if (n === 0) return 0;
  c.tx_batches++;
  const now = dp.now();
  const v = port.vnet;
  const vs = port.vstats;
  const vh = port.vnetHdrLen;
  x.gsoCursor = x.gsoBase;
  for (let i = 0; i < n; i++) {
    const base = i * dp.slotSize + dp.headroom;
    const off = base + vh;
    const len = lens[i] - vh;
    c.tx_packets++;
    c.tx_bytes += len;
    // 2. check
    if (len < ETH_HLEN) {
      c.tx_short++;
      continue;
    }
    let mss = 0;
    if (vh !== 0) {
      const raw = arena[base + VNET_OFF_GSO_TYPE];
      // the ECN bit: the TCP super-frame carries CWR, which goes on its first segment only (the split does that)
      const gso = raw & ~VNET_GSO_ECN;
      if (raw === VNET_GSO_NONE) {
        if ((arena[base + VNET_OFF_FLAGS] & VNET_F_NEEDS_CSUM) !== 0 && !finishChecksum(arena, off, len, readU16le(arena, base + VNET_OFF_CSUM_START), readU16le(arena, base + VNET_OFF_CSUM_OFFSET))) {
          c.tx_bad_offload++;
          continue;
        }
      } else if (gso === VNET_GSO_TCPV4 || gso === VNET_GSO_TCPV6 || raw === VNET_GSO_UDP_L4) {
        mss = readU16le(arena, base + VNET_OFF_GSO_SIZE);
        if (mss === 0 || mss > port.mtu) {
          c.tx_bad_offload++;
          continue;
        }
        c.tx_gso_frames++;
        if (raw !== gso) c.tx_gso_ecn++;
      } else {
        c.tx_bad_offload++; // only TSO4, TSO6 (with ECN) and USO are enabled on our TAPs
        continue;
      }
    }
    port.txFrames++;
    port.txBytes += len;
    // 3. the source MAC is the endpoint's
    if (isGroupMac(arena, off + ETH_OFF_SRC)) {
      c.tx_group_src_mac++;
      continue;
    }
    if (readMac(arena, off + ETH_OFF_SRC) !== port.mac) {
      c.tx_spoofed_src_mac++;
      continue;
    }
    const etype = readU16(arena, off + ETH_OFF_TYPE);
    if (port.ip !== 0) {
      if (etype === ETH_P_IP && len >= ETH_HLEN + IPV4_HLEN_MIN && readU32(arena, off + ETH_HLEN + IPV4_OFF_SRC) !== port.ip) {
        c.tx_spoofed_src_ip++;
        continue;
      }
      if (etype === ETH_P_ARP && len >= ETH_HLEN + ARP_HLEN) {
        const spa = readU32(arena, off + ETH_HLEN + ARP_OFF_SPA);
        if (spa !== port.ip && spa !== 0) {
          c.tx_spoofed_arp++;
          continue;
        }
      }
    }
    if (mss === 0 && len > port.mtu + ETH_HLEN + (etype === ETH_P_8021Q ? VLAN_HLEN : 0)) {
      c.tx_oversize++;
      if (etype === ETH_P_IP && fragNeeded(dp, arena, off, len, port)) {
        out.tap(port, off, ICMP_REPLY_LEN(arena, off));
        c.icmp_frag_needed++;
      } else if (etype === ETH_P_IPV6) {
        const r = packetTooBig(arena, off, len, (i + 1) * dp.slotSize, port);
        if (r !== 0) {
          out.tap(port, off, r);
          c.icmp6_packet_too_big++;
        }
      }
      continue;
    }
    vs.tx_packets++;
    vs.tx_bytes += len;
    // 4. arp
    if (mss === 0 && v.arp.size !== 0 && len >= ETH_HLEN + ARP_HLEN && etype === ETH_P_ARP && arpReply(arena, off, port)) {
      out.tap(port, off, len);
      c.arp_suppressed++;
      continue;
    }
    // 5. lookup
    if (isGroupMac(arena, off + ETH_OFF_DST)) {
      flood(dp, port, off, len, mss);
      continue;
    }
    const e = dp.fdb.lookupAt(v, arena, off + ETH_OFF_DST, now);
    if (e === undefined) {
      flood(dp, port, off, len, mss);
      continue;
    }
    if (e.local !== null) {
      if (e.local === port) c.tx_hairpin++;
      else {
        if (mss !== 0) out.tap(e.local, off - vh, len + vh, true); // the super-frame, header and all
        else out.tap(e.local, off, len);
        c.tx_local_frames++;
      }
      continue;
    }
    if (mss !== 0) {
      const seg = tso(dp, off, len, mss, v.vni);
      if (seg !== null) sendSegments(dp, seg, txSocket(dp, arena, off, len), e.vtep, e.port, e.peer, len);
      continue;
    }
    writeVxlanHeader(arena, off - VXLAN_HLEN, v.vni);
    out.udp(txSocket(dp, arena, off, len), off - VXLAN_HLEN, len + VXLAN_HLEN, e.vtep, e.port);
    const peer = e.peer;
    if (peer !== null) {
      peer.tx_packets++;
      peer.tx_bytes += len;
    }
  }
  // 6. flush
  out.flush();
  return n;
}

/** Broadcast, multicast and unknown unicast: every other local endpoint of the VNI, then the flood list. */
function flood(dp: Dataplane, port: Port, off: number, len: number, mss: number): void {
  const v = port.vnet;
  const out = dp.x.out;
  const vh = port.vnetHdrLen;
  let copies = 0;
  const locals = v.locals;
  for (let j = 0; j < locals.length; j++) {
    const p = locals[j];
    if (p === port) continue;
    if (mss !== 0) out.tap(p, off - vh, len + vh, true);
    else out.tap(p, off, len);
    dp.counters.tx_local_frames++;
    copies++;
  }
  const rdsts = v.flood;
  if (rdsts.length > 0 && mss !== 0) {
    const seg = tso(dp, off, len, mss, v.vni);
    if (seg !== null) {
      const sock = txSocket(dp, dp.x.arena, off, len);
      for (let j = 0; j < rdsts.length; j++) sendSegments(dp, seg, sock, rdsts[j].vtep, rdsts[j].port, rdsts[j].peer, len);
      copies++;
    }
  } else if (rdsts.length > 0) {
    writeVxlanHeader(dp.x.arena, off - VXLAN_HLEN, v.vni);
    const sock = txSocket(dp, dp.x.arena, off, len);
    for (let j = 0; j < rdsts.length; j++) {
      const r = rdsts[j];
      out.udp(sock, off - VXLAN_HLEN, len + VXLAN_HLEN, r.vtep, r.port);
      r.peer.tx_packets++;
      r.peer.tx_bytes += len;
      copies++;
    }
  }
  if (copies === 0) dp.counters.tx_no_destination++;
}

interface Segmented {
  start: number;
  count: number;
  stride: number;
  total: number;
}

/** Splits a TSO super-frame into the GSO region, each frame behind its VXLAN header. Null: counted, dropped. */
function tso(dp: Dataplane, off: number, len: number, mss: number, vni: number): Segmented | null {
  const x = dp.x;
  const arena = x.arena;
  if (x.gsoCursor + len + 2 * UDP_GSO_MAX_SEGS * 128 > arena.length) {
    x.out.flush(); // the region is full: send what refers to it, then reuse it
    x.gsoCursor = x.gsoBase;
  }
  const start = x.gsoCursor;
  const count = tsoSplit(arena, off, len, mss, start, VXLAN_HLEN, vni, tsoOut);
  if (count < 0) {
    dp.counters.tx_bad_offload++;
    return null;
  }
  const total = tsoOut[2];
  x.gsoCursor = start + ((total + 63) & ~63);
  dp.counters.tx_gso_segments += count;
  segmented.start = start;
  segmented.count = count;
  segmented.stride = tsoOut[1];
  segmented.total = total;
  return segmented;
}

/** tsoSplit's count, stride, total, and tso()'s answer: reused, so nothing is allocated per super-frame (the
 * answer is used before the next call). */
const tsoOut = new Int32Array(3);
const segmented: Segmented = { start: 0, count: 0, stride: 0, total: 0 };

/** Queues the segmented datagrams for one VTEP: runs of up to 64 / 65507 bytes, each one UDP GSO send. */
function sendSegments(dp: Dataplane, s: Segmented, sock: number, vtep: number, port: number, peer: Peer | null, bytes: number): void {
  const per = Math.min(UDP_GSO_MAX_SEGS, Math.floor(UDP_GSO_MAX_BYTES / s.stride));
  for (let k = 0; k < s.count; k += per) {
    const n = Math.min(per, s.count - k);
    const off = s.start + k * s.stride;
    const len = k + n === s.count ? s.total - k * s.stride : n * s.stride;
    dp.x.out.udp(sock, off, len, vtep, port, n > 1 ? s.stride : 0);
    dp.counters.tx_gso_sends++;
  }
  if (peer !== null) {
    peer.tx_packets += s.count;
    peer.tx_bytes += bytes;
  }
}

/**
 * If the frame at `off` is an Ethernet/IPv4 ARP request for an address in the VNI's ARP table (and not the
 * sender's own: an RFC 5227 probe must go unanswered unless someone else holds the address), rewrites it in
 * place into the reply and returns true.
 */
function arpReply(arena: Uint8Array, off: number, port: Port): boolean {
  const a = off + ETH_HLEN;
  if (
    readU16(arena, a + ARP_OFF_OPER) !== ARPOP_REQUEST ||
    readU16(arena, a + ARP_OFF_HTYPE) !== ARPHRD_ETHER ||
    readU16(arena, a + ARP_OFF_PTYPE) !== ETH_P_IP ||
    arena[a + ARP_OFF_HLEN] !== 6 ||
    arena[a + ARP_OFF_PLEN] !== 4
  ) {
    return false;
  }
  const tpa = readU32(arena, a + ARP_OFF_TPA);
  const mac = port.vnet.arp.get(tpa);
  if (mac === undefined || mac === port.mac) return false;
  arena.copyWithin(off + ETH_OFF_DST, off + ETH_OFF_SRC, off + ETH_OFF_SRC + 6); // to the requester
  writeMac(mac, arena, off + ETH_OFF_SRC);
  writeU16(arena, a + ARP_OFF_OPER, ARPOP_REPLY);
  arena.copyWithin(a + ARP_OFF_THA, a + ARP_OFF_SHA, a + ARP_OFF_SHA + 10); // target := sender (MAC + IPv4)
  writeMac(mac, arena, a + ARP_OFF_SHA);
  writeU32(arena, a + ARP_OFF_SPA, tpa);
  return true;
}

const ICMP_HLEN = 8;
const ICMP_DEST_UNREACH = 3;
const ICMP_FRAG_NEEDED = 4;

/** Length of the ICMP reply fragNeeded() wrote at `off`. */
function ICMP_REPLY_LEN(arena: Uint8Array, off: number): number {
  return ETH_HLEN + ((arena[off + ETH_HLEN + 2] << 8) | arena[off + ETH_HLEN + 3]);
}

/**
 * An oversize IPv4 packet with DF: overwrite it, in place, with the ICMP "fragmentation needed" the sender
 * must get (RFC 1191), as if from the destination (as the kernel's tunnel PMTU code does): quoting the original
 * IP header + 8 bytes, next-hop MTU = the port's MTU. Returns false (nothing written) for non-DF, fragments of
 * ICMP errors, or malformed headers.
 */
function fragNeeded(dp: Dataplane, arena: Uint8Array, off: number, len: number, port: Port): boolean {
  const ip = off + ETH_HLEN;
  const ihl = (arena[ip + IPV4_OFF_VER_IHL] & 0x0f) * 4;
  if (arena[ip + IPV4_OFF_VER_IHL] >>> 4 !== 4 || ihl < IPV4_HLEN_MIN || len < ETH_HLEN + ihl + 8) return false;
  if ((readU16(arena, ip + IPV4_OFF_FRAG) & IPV4_FLAG_DF) === 0) return false;
  if (arena[ip + IPV4_OFF_PROTO] === IPPROTO_ICMP && arena[ip + ihl] !== 8 && arena[ip + ihl] !== 0) return false; // never answer an ICMP error
  const quoteLen = ihl + 8;
  const quote = dp.x.scratch;
  quote.set(arena.subarray(ip, ip + quoteLen));
  const src = readU32(quote, IPV4_OFF_SRC);
  const dst = readU32(quote, IPV4_OFF_DST);
  // Ethernet: back to the sender, from the MAC it sent to (the IP header is already quoted, so the
  // destination MAC may be parked in bytes 12..18 while the two addresses swap)
  swapEthAddrs(arena, off);
  writeU16(arena, off + ETH_OFF_TYPE, ETH_P_IP);
  // IPv4
  const total = IPV4_HLEN_MIN + ICMP_HLEN + quoteLen;
  arena.fill(0, ip, ip + total);
  arena[ip] = 0x45;
  arena[ip + 1] = 0xc0; // precedence: internetwork control, as for ICMP errors
  writeU16(arena, ip + 2, total);
  arena[ip + 8] = 64;
  arena[ip + IPV4_OFF_PROTO] = IPPROTO_ICMP;
  writeU32(arena, ip + IPV4_OFF_SRC, dst);
  writeU32(arena, ip + IPV4_OFF_DST, src);
  writeU16(arena, ip + 10, internetChecksum(arena, ip, ip + IPV4_HLEN_MIN));
  // ICMP
  const icmp = ip + IPV4_HLEN_MIN;
  arena[icmp] = ICMP_DEST_UNREACH;
  arena[icmp + 1] = ICMP_FRAG_NEEDED;
  writeU16(arena, icmp + 6, port.mtu);
  arena.set(quote.subarray(0, quoteLen), icmp + ICMP_HLEN);
  writeU16(arena, icmp + 2, internetChecksum(arena, icmp, icmp + ICMP_HLEN + quoteLen));
  return true;
}

const ICMPV6_HLEN = 8;
const ICMPV6_PKT_TOOBIG = 2;
/** RFC 4443: an ICMPv6 error quotes as much of the invoking packet as fits in the minimum IPv6 MTU (1280). */
const ICMPV6_QUOTE_MAX = 1280 - IPV6_HLEN - ICMPV6_HLEN;

/** Swaps the Ethernet addresses of the frame at `off` in place (a reply goes back to the sender, from the MAC it
 * sent to), using the 6 bytes after the source (the Ethertype and 4 bytes of the header after it) as scratch: the
 * caller has saved or moved what was there, and writes it again. */
function swapEthAddrs(arena: Uint8Array, off: number): void {
  arena.copyWithin(off + ETH_OFF_SRC + 6, off + ETH_OFF_DST, off + ETH_OFF_DST + 6); // park dst MAC after src
  arena.copyWithin(off + ETH_OFF_DST, off + ETH_OFF_SRC, off + ETH_OFF_SRC + 6);
  arena.copyWithin(off + ETH_OFF_SRC, off + ETH_OFF_SRC + 6, off + ETH_OFF_SRC + 12);
}

/**
 * An oversize IPv6 packet: overwrite it, in place, with the ICMPv6 "packet too big" the sender must get (RFC
 * 4443 3.2, RFC 8201), as if from the destination, MTU = the port's MTU, quoting as much of the packet as fits
 * in 1280 bytes. IPv6 has no DF bit: routers never fragment, so every oversize packet gets one. Returns the
 * message's frame length, or 0 (nothing written) for a malformed header, an unspecified source (RFC 4443 2.4 e)
 * or an ICMPv6 error (no error about an error). The message is at most 1294 bytes, shorter than any packet over an MTU of 1280 or more;
 * over a smaller MTU (which breaks IPv6 anyway) it is written only if it fits before `end` (the slot's end).
 */
function packetTooBig(arena: Uint8Array, off: number, len: number, end: number, port: Port): number {
  const ip = off + ETH_HLEN;
  if (len < ETH_HLEN + IPV6_HLEN || arena[ip] >>> 4 !== 6) return 0;
  const quoteLen = Math.min(len - ETH_HLEN, ICMPV6_QUOTE_MAX);
  const icmpLen = ICMPV6_HLEN + quoteLen;
  if (ip + IPV6_HLEN + icmpLen > Math.min(end, arena.length)) return 0;
  let unspecified = true;
  for (let i = IPV6_OFF_SRC; i < IPV6_OFF_DST; i++) if (arena[ip + i] !== 0) unspecified = false;
  if (unspecified) return 0;
  if (arena[ip + IPV6_OFF_NEXT_HDR] === IPPROTO_ICMPV6 && (len < ETH_HLEN + IPV6_HLEN + 1 || arena[ip + IPV6_HLEN] < 128)) return 0;
  const icmp = ip + IPV6_HLEN;
  // the quote first, moved to where it goes (overlapping: copyWithin moves like memmove); the header is then
  // rebuilt from the quoted one
  const q = icmp + ICMPV6_HLEN;
  arena.copyWithin(q, ip, ip + quoteLen);
  swapEthAddrs(arena, off);
  writeU16(arena, off + ETH_OFF_TYPE, ETH_P_IPV6);
  arena[ip] = 0x60; // version 6, traffic class 0, flow label 0
  arena[ip + 1] = 0;
  arena[ip + 2] = 0;
  arena[ip + 3] = 0;
  writeU16(arena, ip + IPV6_OFF_PAYLOAD_LEN, icmpLen);
  arena[ip + IPV6_OFF_NEXT_HDR] = IPPROTO_ICMPV6;
  arena[ip + 7] = 64; // hop limit
  arena.copyWithin(ip + IPV6_OFF_SRC, q + IPV6_OFF_DST, q + IPV6_OFF_DST + 16); // from the original destination
  arena.copyWithin(ip + IPV6_OFF_DST, q + IPV6_OFF_SRC, q + IPV6_OFF_SRC + 16); // to the original source
  arena[icmp] = ICMPV6_PKT_TOOBIG;
  arena[icmp + 1] = 0;
  writeU16(arena, icmp + 2, 0);
  writeU32(arena, icmp + 4, port.mtu);
  writeU16(arena, icmp + 2, finish(sum16(arena, icmp, icmp + icmpLen, pseudoSumV6At(arena, ip, IPPROTO_ICMPV6, icmpLen))));
  return ETH_HLEN + IPV6_HLEN + icmpLen;
}

function txSocket(dp: Dataplane, arena: Uint8Array, off: number, len: number): number {
  const n = dp.txSocketCount;
  return n === 1 ? 0 : pickIndex(flowHash(arena, off, off + len, dp.hashSeed), n);
}
