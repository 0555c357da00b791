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
 *                container (tx_spoofed_src_mac); a VLAN tag only where the network allows tags (tx_vlan_tagged);
 *                an IPv6 source must be the endpoint's link-local or (dual stack) its IPv6 address
 *                (tx_spoofed_src_ip6) and neighbour
 *                discovery must name its own address and MAC (tx_spoofed_nd); so must an IPv4 source
 *                (tx_spoofed_src_ip) and an ARP sender address (tx_spoofed_arp); a frame over the MTU is refused (tx_oversize), with ICMP
 *                "fragmentation needed" back for IPv4 with DF, or ICMPv6 "packet too big" for IPv6, so
 *                path-MTU discovery works
 *   4. arp, nd   an ARP request or IPv6 neighbour solicitation for an overlay address the control plane knows is
 *                answered here, in place: the request's bytes become the reply (src/vxlan/arp.ts, nd.ts) and go back
 *                to the sender's TAP (never flooded across hosts)
 *   5. lookup    destination MAC in the VNI's FDB
 *                  local endpoint -> queue a TAP write (a frame back to its own sender is tx_hairpin)
 *                  remote VTEP    -> encap: write the 8-byte VXLAN header into the headroom, queue one datagram
 *                  group/unknown  -> flood: every other local endpoint of the VNI + every VTEP of the flood list,
 *                                    within the endpoint's storm budget (tx_storm_dropped beyond it)
 *   6. flush     one writeBatch for the TAP writes, one sendBatch (sendmmsg per socket) for the datagrams
 *
 * A TSO super-frame goes to a local endpoint whole (its header intact: the receiving stack takes it as one
 * skb); towards VTEPs it is split into MSS-sized frames in the arena's GSO region, each behind its VXLAN header,
 * and each run of equal-sized datagrams is ONE sendmsg with UDP_SEGMENT: the kernel cuts it.
 *
 * The outer UDP source port comes from the inner flow hash (RFC 7348 section 5): it picks one of the agent's
 * transmit sockets, each bound to its own port, so a flow keeps one port and flows spread over ECMP/RSS.
 */
import { ndGet, type Peer, type Vnet } from '../fdb/fdb.js';
import { SEAL_HLEN, SEAL_OVERHEAD, SEAL_TAG, writeSealHeaders } from '../fdb/sec.js';
import { arpReplyInPlace, arpRequestTarget } from '../vxlan/arp.js';
import {
  ARP_HLEN,
  ARP_OFF_SPA,
  ETH_HLEN,
  ETH_OFF_DST,
  ETH_OFF_SRC,
  ETH_OFF_TYPE,
  ETH_P_8021AD,
  ETH_P_8021Q,
  ETH_P_ARP,
  ETH_P_IP,
  ETH_P_IPV6,
  IPV4_HLEN_MIN,
  IPV4_OFF_SRC,
  IPPROTO_ICMPV6,
  IPV6_HLEN,
  IPV6_OFF_NEXT_HDR,
  IPV6_OFF_SRC,
  VLAN_HLEN,
  VXLAN_HLEN,
} from '../vxlan/constants.js';
import { readU16, readU32 } from '../vxlan/ethernet.js';
import { flowHash, pickIndex } from '../vxlan/flowhash.js';
import {
  finishChecksum,
  readU16le,
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
import { fragNeeded, packetTooBig } from '../vxlan/icmp.js';
import { isGroupMac, readMac } from '../vxlan/mac.js';
import { writeVxlanHeader } from '../vxlan/vxlan.js';
import {
  ND_HLEN,
  ND_NEIGHBOR_ADVERT,
  ND_NEIGHBOR_SOLICIT,
  ND_OFF_TARGET,
  ND_OPT_SOURCE_LL,
  ND_OPT_TARGET_LL,
  ndAdvertInPlace,
  ndSolicitTarget,
} from '../vxlan/nd.js';
import type { XmitContext } from './context.js';
import type { Port } from './port.js';

/** Reads and forwards one batch from `port`'s TAP. Returns the number of frames read. */
export function xmit(dp: XmitContext, port: Port): number {
  const x = dp.tx;
  const { arena, lens, out } = x;
  const c = dp.counters;
  // 1. read
  const n = dp.io.readBatch(port.fd, arena, dp.slotSize, dp.headroom, dp.batch, lens);
  if (n === 0) return 0;
  c.tx_batches++;
  const now = dp.now();
  const v = port.vnet;
  const vs = v.counters;
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
        if (
          (arena[base + VNET_OFF_FLAGS] & VNET_F_NEEDS_CSUM) !== 0 &&
          !finishChecksum(
            arena,
            off,
            len,
            readU16le(arena, base + VNET_OFF_CSUM_START),
            readU16le(arena, base + VNET_OFF_CSUM_OFFSET),
            dp.kernels.sum16,
          )
        ) {
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
    if ((etype === ETH_P_8021Q || etype === ETH_P_8021AD) && !port.allowTagged) {
      c.tx_vlan_tagged++; // a tag would let the frame past the checks below (and into another VLAN on a trunk)
      continue;
    }
    if (etype === ETH_P_IPV6 && port.ll6Hi !== 0) {
      const r = ipv6SourceCheck(arena, off, len, port);
      if (r !== 0) {
        if (r === 1) c.tx_spoofed_src_ip6++;
        else c.tx_spoofed_nd++;
        continue;
      }
    }
    if (port.ip !== 0) {
      if (
        etype === ETH_P_IP &&
        len >= ETH_HLEN + IPV4_HLEN_MIN &&
        readU32(arena, off + ETH_HLEN + IPV4_OFF_SRC) !== port.ip
      ) {
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
      if (etype === ETH_P_IP) {
        const r = fragNeeded(arena, off, len, port.mtu, x.scratch);
        if (r !== 0) {
          out.tap(port, off, r);
          c.icmp_frag_needed++;
        }
      } else if (etype === ETH_P_IPV6) {
        const r = packetTooBig(arena, off, len, (i + 1) * dp.slotSize, port.mtu, dp.kernels.sum16);
        if (r !== 0) {
          out.tap(port, off, r);
          c.icmp6_packet_too_big++;
        }
      }
      continue;
    }
    vs.tx_packets++;
    vs.tx_bytes += len;
    // 4. arp, nd
    // an ARP request for an address the control plane knows (and not the sender's own: an RFC 5227 probe must go
    // unanswered unless someone else holds the address) is answered here, the request's bytes becoming the reply
    if (mss === 0 && v.arp.size !== 0 && len >= ETH_HLEN + ARP_HLEN && etype === ETH_P_ARP) {
      const tpa = arpRequestTarget(arena, off);
      const mac = tpa < 0 ? undefined : v.arp.get(tpa);
      if (mac !== undefined && mac !== port.mac) {
        arpReplyInPlace(arena, off, mac);
        out.tap(port, off, len);
        c.arp_suppressed++;
        continue;
      }
    }
    // the same for a neighbour solicitation (duplicate address detection of the sender's own address included:
    // it goes unanswered, as the probe above)
    if (mss === 0 && v.nd.size !== 0 && etype === ETH_P_IPV6) {
      const t = ndSolicitTarget(arena, off, len);
      const mac = t < 0 ? -1 : ndGet(v.nd, arena, t);
      if (mac >= 0 && mac !== port.mac) {
        out.tap(port, off, ndAdvertInPlace(arena, off, mac, dp.kernels.sum16));
        c.nd_suppressed++;
        continue;
      }
    }
    // 5. lookup
    if (isGroupMac(arena, off + ETH_OFF_DST)) {
      flood(dp, port, off, len, mss, now);
      continue;
    }
    const e = dp.fdb.lookupAt(v, arena, off + ETH_OFF_DST, now);
    if (e === undefined) {
      flood(dp, port, off, len, mss, now);
      continue;
    }
    if (e.local !== null) {
      if (e.local === port) c.tx_hairpin++;
      else {
        if (mss !== 0)
          out.tap(e.local, off - vh, len + vh, true); // the super-frame, header and all
        else out.tap(e.local, off, len);
        c.tx_local_frames++;
      }
      continue;
    }
    if (mss !== 0) {
      const seg = tso(dp, off, len, mss, v);
      if (seg !== null) sendSegments(dp, seg, txSocket(dp, arena, off, len), e.vtep, e.port, e.peer, len);
      continue;
    }
    const sock = txSocket(dp, arena, off, len);
    if (v.sec === null) {
      writeVxlanHeader(arena, off - VXLAN_HLEN, v.vni);
      out.udp(sock, off - VXLAN_HLEN, len + VXLAN_HLEN, e.vtep, e.port);
    } else if (sealFrame(dp, v, off, len)) {
      out.udp(sock, off - VXLAN_HLEN - SEAL_HLEN, len + VXLAN_HLEN + SEAL_OVERHEAD, e.vtep, e.port);
    } else continue;
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

/**
 * Storm control: each endpoint may flood (broadcast, multicast, unknown unicast) `stormPps` frames a second on
 * average, in bursts of up to `stormBurst` (a token bucket). ARP requests the agent answers itself never get here.
 */
function stormAdmit(dp: XmitContext, port: Port, now: number): boolean {
  let t = port.stormTokens + ((now - port.stormStamp) * dp.stormPps) / 1000;
  if (t > dp.stormBurst) t = dp.stormBurst;
  port.stormStamp = now;
  if (t < 1) {
    port.stormTokens = t;
    return false;
  }
  port.stormTokens = t - 1;
  return true;
}

/** Broadcast, multicast and unknown unicast: every other local endpoint of the VNI, then the flood list, within
 * the endpoint's storm budget. */
function flood(dp: XmitContext, port: Port, off: number, len: number, mss: number, now: number): void {
  if (dp.stormPps !== 0 && !stormAdmit(dp, port, now)) {
    dp.counters.tx_storm_dropped++;
    return;
  }
  const v = port.vnet;
  const out = dp.tx.out;
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
    const seg = tso(dp, off, len, mss, v);
    if (seg !== null) {
      const sock = txSocket(dp, dp.tx.arena, off, len);
      for (let j = 0; j < rdsts.length; j++)
        sendSegments(dp, seg, sock, rdsts[j].vtep, rdsts[j].port, rdsts[j].peer, len);
      copies++;
    }
  } else if (rdsts.length > 0) {
    // one datagram for every VTEP of the list (sealed once: every replica carries the same bytes)
    const sock = txSocket(dp, dp.tx.arena, off, len);
    let at = off - VXLAN_HLEN;
    let dlen = len + VXLAN_HLEN;
    if (v.sec === null) writeVxlanHeader(dp.tx.arena, at, v.vni);
    else if (sealFrame(dp, v, off, len)) {
      at -= SEAL_HLEN;
      dlen += SEAL_OVERHEAD;
    } else return;
    for (let j = 0; j < rdsts.length; j++) {
      const r = rdsts[j];
      out.udp(sock, at, dlen, r.vtep, r.port);
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

/**
 * Queues the seal of one frame at `off` (encrypted networks): its VXLAN and crypto headers go in front of it, the
 * tag after it. False (counted) when the network has no key to send with yet.
 */
function sealFrame(dp: XmitContext, v: Vnet, off: number, len: number): boolean {
  const k = v.sec!.tx;
  if (k === null) {
    dp.counters.tx_no_key++;
    return false;
  }
  const at = off - VXLAN_HLEN - SEAL_HLEN;
  writeSealHeaders(dp.tx.arena, at, v.vni, k);
  dp.tx.out.seal(at, len + VXLAN_HLEN + SEAL_HLEN, k.slot);
  return true;
}

/**
 * Splits a TSO super-frame into the GSO region, each frame behind its VXLAN header. Null: counted, dropped.
 *
 * On an encrypted network each segment is sealed on its own (equal segments stay equal, so the runs remain UDP
 * GSO sends): the split reserves SEAL_TAG + VXLAN + SEAL_HLEN bytes in front of each frame, of which the first
 * SEAL_TAG take the tag of the segment before it, so the sealed datagrams lie back to back at the stride.
 */
function tso(dp: XmitContext, off: number, len: number, mss: number, v: Vnet): Segmented | null {
  const x = dp.tx;
  const arena = x.arena;
  const sec = v.sec;
  if (sec !== null && sec.tx === null) {
    dp.counters.tx_no_key++;
    return null;
  }
  if (x.gsoCursor + len + 2 * UDP_GSO_MAX_SEGS * 128 > arena.length) {
    x.out.flush(); // the region is full: send what refers to it, then reuse it
    x.gsoCursor = x.gsoBase;
  }
  const start = x.gsoCursor;
  const prefix = sec === null ? VXLAN_HLEN : SEAL_TAG + VXLAN_HLEN + SEAL_HLEN;
  const count = dp.kernels.tsoSplit(arena, off, len, mss, start, prefix, sec === null ? v.vni : -1, tsoOut);
  if (count < 0) {
    dp.counters.tx_bad_offload++;
    return null;
  }
  const stride = tsoOut[1];
  const total = tsoOut[2];
  dp.counters.tx_gso_segments += count;
  segmented.start = start;
  segmented.count = count;
  segmented.stride = stride;
  segmented.total = total;
  if (sec !== null) {
    const k = sec.tx!;
    const first = start + SEAL_TAG;
    for (let i = 0; i < count; i++) {
      const at = first + i * stride;
      const dlen = i === count - 1 ? total - i * stride : stride;
      writeSealHeaders(arena, at, v.vni, k);
      x.out.seal(at, dlen - SEAL_TAG, k.slot);
    }
    segmented.start = first;
  }
  x.gsoCursor = start + ((total + SEAL_TAG + 63) & ~63);
  return segmented;
}

/** tsoSplit's count, stride, total, and tso()'s answer: reused, so nothing is allocated per super-frame (the
 * answer is used before the next call). */
const tsoOut = new Int32Array(3);
const segmented: Segmented = { start: 0, count: 0, stride: 0, total: 0 };

/** Queues the segmented datagrams for one VTEP: runs of up to 64 / 65507 bytes, each one UDP GSO send. */
function sendSegments(
  dp: XmitContext,
  s: Segmented,
  sock: number,
  vtep: number,
  port: number,
  peer: Peer | null,
  bytes: number,
): void {
  const per = Math.min(UDP_GSO_MAX_SEGS, Math.floor(UDP_GSO_MAX_BYTES / s.stride));
  for (let k = 0; k < s.count; k += per) {
    const n = Math.min(per, s.count - k);
    const off = s.start + k * s.stride;
    const len = k + n === s.count ? s.total - k * s.stride : n * s.stride;
    dp.tx.out.udp(sock, off, len, vtep, port, n > 1 ? s.stride : 0);
    dp.counters.tx_gso_sends++;
  }
  if (peer !== null) {
    peer.tx_packets += s.count;
    peer.tx_bytes += bytes;
  }
}

/**
 * An IPv6 packet from an endpoint: 0 if its source is the endpoint's own link-local address (fe80::/64 with the
 * EUI-64 of its MAC: what the kernel gives the TAP), its IPv6 address on a dual-stack network, or, for ICMPv6 and hop-by-hop (MLD) only, the unspecified
 * address of duplicate address detection; 1 if not (tx_spoofed_src_ip6); 2 if it is neighbour discovery that
 * claims another node: a neighbour advertisement for an address that is not the endpoint's (either of them), or a source or target
 * link-layer address option that is not its MAC (tx_spoofed_nd: NDP poisoning).
 */
function ipv6SourceCheck(a: Uint8Array, off: number, len: number, port: Port): number {
  const ip = off + ETH_HLEN;
  if (len < ETH_HLEN + IPV6_HLEN) return 1;
  const src = ip + IPV6_OFF_SRC;
  const next = a[ip + IPV6_OFF_NEXT_HDR];
  const w0 = readU32(a, src);
  const w1 = readU32(a, src + 4);
  const w2 = readU32(a, src + 8);
  const w3 = readU32(a, src + 12);
  const own = ownIpv6(port, w0, w1, w2, w3);
  if (!own && !((w0 | w1 | w2 | w3) === 0 && (next === IPPROTO_ICMPV6 || next === IPPROTO_HOPOPTS))) return 1;
  if (next !== IPPROTO_ICMPV6 || len < ETH_HLEN + IPV6_HLEN + ND_HLEN) return 0;
  const icmp = ip + IPV6_HLEN;
  const type = a[icmp];
  if (type !== ND_NEIGHBOR_SOLICIT && type !== ND_NEIGHBOR_ADVERT) return 0;
  const target = icmp + ND_OFF_TARGET;
  if (type === ND_NEIGHBOR_ADVERT) {
    const own = ownIpv6(
      port,
      readU32(a, target),
      readU32(a, target + 4),
      readU32(a, target + 8),
      readU32(a, target + 12),
    );
    if (!own) return 2; // an advertisement for an address that is not the endpoint's
  }
  // options: type, length in units of 8 bytes; source (1) and target (2) link-layer addresses carry a MAC
  for (let o = icmp + ND_HLEN, end = off + len; o + 8 <= end;) {
    const olen = a[o + 1] * 8;
    if (olen === 0) return 2; // malformed (RFC 4861 4.6: a zero length is invalid)
    if ((a[o] === ND_OPT_SOURCE_LL || a[o] === ND_OPT_TARGET_LL) && readMac(a, o + 2) !== port.mac) return 2;
    o += olen;
  }
  return 0;
}

/** Whether the IPv6 address w0..w3 is the endpoint's own: its link-local address, or its address on a dual-stack
 * network (never ::, which a port without one holds as all zeros). */
function ownIpv6(port: Port, w0: number, w1: number, w2: number, w3: number): boolean {
  return (
    (w0 === LL_PREFIX && w1 === 0 && w2 === port.ll6Hi && w3 === port.ll6Lo) ||
    (w0 === port.ip6w0 && w1 === port.ip6w1 && w2 === port.ip6w2 && w3 === port.ip6w3 && (w0 | w1 | w2 | w3) !== 0)
  );
}

/** fe80::/64, the link-local prefix, as the first 32-bit word. */
const LL_PREFIX = 0xfe800000;
const IPPROTO_HOPOPTS = 0;

function txSocket(dp: XmitContext, arena: Uint8Array, off: number, len: number): number {
  const n = dp.txSocketCount;
  return n === 1 ? 0 : pickIndex(flowHash(arena, off, off + len, dp.hashSeed), n);
}
