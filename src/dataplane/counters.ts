/**
 * Data plane counters. Every drop has a reason with a stable name (docs/counters.md lists them); a bad packet
 * bumps its counter and is dropped, it never throws. Plain numeric fields of one fixed shape: incrementing one
 * is a property add, reading them is free.
 */

export const DROP_REASONS = [
  // xmit (TAP -> wire)
  'tx_short', // frame shorter than an Ethernet header
  'tx_spoofed_src_mac', // source MAC is not the endpoint's own
  'tx_group_src_mac', // source MAC is a group (multicast) address
  'tx_spoofed_src_ip', // IPv4 source address is not the endpoint's own
  'tx_spoofed_arp', // ARP sender address is not the endpoint's own (ARP poisoning)
  'tx_spoofed_src_ip6', // IPv6 source is not the endpoint's link-local address (nor :: for DAD/MLD)
  'tx_spoofed_nd', // neighbour discovery naming another address or MAC (NDP poisoning)
  'tx_vlan_tagged', // an 802.1Q/802.1ad-tagged frame on a network that does not allow tags
  'tx_oversize', // larger than the overlay MTU (IPv4 with DF also gets ICMP fragmentation-needed back)
  'tx_hairpin', // destination is the sending endpoint itself
  'tx_no_destination', // broadcast/unknown with nobody to send it to
  'tx_storm_dropped', // broadcast/multicast/unknown unicast over the endpoint's storm budget (--storm-pps)
  'tx_bad_offload', // a virtio-net header we cannot honour (unknown GSO type, offsets outside the frame)
  'tx_udp_error', // the kernel refused the datagram (see udpErrors by errno)
  'tx_tap_error', // write to a local endpoint's TAP failed
  'tx_seal_error', // sealing failed (never expected; the datagram goes out as zeros, never in clear)
  'tx_no_key', // a frame for another host on an encrypted network with no key to send with yet
  // rcv (wire -> TAP)
  'rx_truncated', // datagram larger than the receive slot
  'rx_short', // shorter than VXLAN + Ethernet headers
  'rx_unknown_vtep', // outer source address is not a known VTEP
  'rx_bad_flags', // VXLAN flags octet is not exactly I (0x08)
  'rx_unknown_vni', // VNI not configured here
  'rx_group_src_mac', // inner source MAC is a group address
  'rx_src_mac_local', // inner source MAC is a local endpoint's (or a configured remote one behind another VTEP)
  'rx_no_local_dst', // unicast to a MAC that is not a local endpoint
  'rx_tap_error', // write to the endpoint's TAP failed
  'rx_unsealed', // a plaintext datagram for an encrypted network
  'rx_sealed_unexpected', // a sealed datagram for a network that is not encrypted here (or not here at all)
  'rx_unknown_key', // sealed with a key id this host has no key for from that sender (unknown, rotated out)
  'rx_bad_tag', // authentication failed: tampered, truncated, or sealed with another key
  'rx_replay', // a counter already received from that sender under that key
  'rx_too_old', // a counter older than the replay window
  'rx_learn_full', // learning table for the VNI is full (frame still delivered)
] as const;

export type DropReason = (typeof DROP_REASONS)[number];

export class Counters {
  // delivered traffic
  tx_packets = 0; // frames read from local TAPs
  tx_bytes = 0;
  tx_udp_datagrams = 0; // VXLAN datagrams handed to the kernel (one per replica)
  tx_local_frames = 0; // frames written to a local TAP from another local TAP
  rx_datagrams = 0; // datagrams received on the VXLAN socket
  rx_bytes = 0;
  rx_frames = 0; // frames written to local TAPs from the wire (one per replica)
  tx_batches = 0;
  rx_batches = 0;
  learned = 0;
  moved = 0;
  arp_suppressed = 0; // ARP requests answered locally from the control plane's table
  nd_suppressed = 0; // IPv6 neighbour solicitations answered locally (dual-stack networks)
  icmp_frag_needed = 0; // ICMP "fragmentation needed" sent back for oversize DF frames
  icmp6_packet_too_big = 0; // ICMPv6 "packet too big" sent back for oversize IPv6 frames
  tx_gso_frames = 0; // TSO super-frames read from TAPs (offloads on)
  tx_gso_segments = 0; // frames they were split into for VTEPs
  tx_gso_sends = 0; // UDP GSO sends (each one sendmsg entry the kernel cuts into datagrams)
  tx_gso_ecn = 0; // of tx_gso_frames, TCP super-frames flagged ECN (they carry CWR: it goes on the first segment only)
  rx_gro_buffers = 0; // receive buffers the kernel coalesced (UDP GRO) from several datagrams
  rx_gro_frames = 0; // super-frames written to TAPs, merged from...
  rx_gro_segments = 0; // ...this many TCP segments and UDP datagrams
  rx_gro_udp_frames = 0; // of rx_gro_frames, the UDP ones (UDP_L4 super-frames of equal-sized datagrams)
  rx_csum_completed = 0; // inner TCP/UDP checksums a same-machine Linux sender left partial, completed before delivery
  tx_sealed = 0; // datagrams sealed (encrypted networks; a flood's replicas share one seal)
  rx_opened = 0; // sealed datagrams that authenticated and were opened
  rx_gro_bad_csum = 0; // TCP segments or UDP datagrams not merged because their checksum did not verify (delivered as they came)
  // drops
  tx_short = 0;
  tx_spoofed_src_mac = 0;
  tx_group_src_mac = 0;
  tx_spoofed_src_ip = 0;
  tx_spoofed_arp = 0;
  tx_spoofed_src_ip6 = 0;
  tx_spoofed_nd = 0;
  tx_vlan_tagged = 0;
  tx_oversize = 0;
  tx_hairpin = 0;
  tx_no_destination = 0;
  tx_storm_dropped = 0;
  tx_bad_offload = 0;
  tx_udp_error = 0;
  tx_tap_error = 0;
  tx_seal_error = 0;
  tx_no_key = 0;
  rx_truncated = 0;
  rx_short = 0;
  rx_unknown_vtep = 0;
  rx_bad_flags = 0;
  rx_unknown_vni = 0;
  rx_group_src_mac = 0;
  rx_src_mac_local = 0;
  rx_no_local_dst = 0;
  rx_tap_error = 0;
  rx_unsealed = 0;
  rx_sealed_unexpected = 0;
  rx_unknown_key = 0;
  rx_bad_tag = 0;
  rx_replay = 0;
  rx_too_old = 0;
  rx_learn_full = 0;
  /** errno (negative) -> count, for tx_udp_error and the TAP errors. */
  readonly errnos = new Map<number, number>();

  countErrno(e: number): void {
    this.errnos.set(e, (this.errnos.get(e) ?? 0) + 1);
  }

  drops(): Record<DropReason, number> {
    const out = {} as Record<DropReason, number>;
    for (const r of DROP_REASONS) out[r] = this[r];
    return out;
  }

  totalDrops(): number {
    let n = 0;
    for (const r of DROP_REASONS) if (r !== 'rx_learn_full') n += this[r];
    return n;
  }

  snapshot(): Record<string, number | Record<string, number>> {
    const out: Record<string, number | Record<string, number>> = {};
    for (const [k, v] of Object.entries(this)) if (typeof v === 'number') out[k] = v;
    out.errnos = Object.fromEntries([...this.errnos].map(([e, n]) => [String(e), n]));
    return out;
  }
}
