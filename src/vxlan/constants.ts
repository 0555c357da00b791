/**
 * Every header offset, length and flag the codec and the data plane use, in one place. Offsets are relative to
 * the start of their own header. Names follow the kernel's (include/net/vxlan.h, if_ether.h, ip.h).
 */

// ---- VXLAN (RFC 7348 section 5): flags(8) reserved(24) VNI(24) reserved(8)
export const VXLAN_HLEN = 8;
export const VXLAN_OFF_FLAGS = 0;
export const VXLAN_OFF_VNI = 4; // 24-bit VNI in bytes 4..6, byte 7 reserved
export const VXLAN_FLAG_I = 0x08; // "VNI valid"; the only flag RFC 7348 defines
export const VXLAN_VNI_MAX = 0xffffff;
export const VXLAN_DEFAULT_PORT = 4789; // IANA

// ---- outer headers (for overhead accounting; the kernel writes them for us)
export const IPV4_HLEN_MIN = 20;
export const IPV6_HLEN = 40;
export const UDP_HLEN = 8;
/** Bytes VXLAN adds around an inner Ethernet frame on an IPv4 underlay: IPv4 20 + UDP 8 + VXLAN 8. */
export const VXLAN_IPV4_OVERHEAD = IPV4_HLEN_MIN + UDP_HLEN + VXLAN_HLEN;
/** The same on an IPv6 underlay. */
export const VXLAN_IPV6_OVERHEAD = IPV6_HLEN + UDP_HLEN + VXLAN_HLEN;

// ---- Ethernet II / 802.1Q
export const ETH_ALEN = 6;
export const ETH_HLEN = 14;
export const ETH_OFF_DST = 0;
export const ETH_OFF_SRC = 6;
export const ETH_OFF_TYPE = 12;
export const VLAN_HLEN = 4;
export const VLAN_OFF_TCI = 14; // after the 0x8100 TPID at ETH_OFF_TYPE
export const VLAN_OFF_TYPE = 16;
export const ETH_P_IP = 0x0800;
export const ETH_P_ARP = 0x0806;
export const ETH_P_8021Q = 0x8100;
export const ETH_P_8021AD = 0x88a8;
export const ETH_P_IPV6 = 0x86dd;
/** Largest frame the data plane accepts without offloads: 64 KiB less the outer headers. */
export const ETH_FRAME_MAX = 65535;

// ---- ARP (RFC 826) for Ethernet/IPv4
export const ARP_HLEN = 28;
export const ARP_OFF_HTYPE = 0;
export const ARP_OFF_PTYPE = 2;
export const ARP_OFF_HLEN = 4;
export const ARP_OFF_PLEN = 5;
export const ARP_OFF_OPER = 6;
export const ARP_OFF_SHA = 8;
export const ARP_OFF_SPA = 14;
export const ARP_OFF_THA = 18;
export const ARP_OFF_TPA = 24;
export const ARPHRD_ETHER = 1;
export const ARPOP_REQUEST = 1;
export const ARPOP_REPLY = 2;

// ---- IPv4 (RFC 791)
export const IPV4_OFF_VER_IHL = 0;
export const IPV4_OFF_TOS = 1;
export const IPV4_OFF_TOT_LEN = 2;
export const IPV4_OFF_ID = 4;
export const IPV4_OFF_FRAG = 6;
export const IPV4_OFF_TTL = 8;
export const IPV4_OFF_PROTO = 9;
export const IPV4_OFF_CSUM = 10;
export const IPV4_OFF_SRC = 12;
export const IPV4_OFF_DST = 16;
export const IPV4_FLAG_DF = 0x4000;
export const IPV4_FLAG_MF = 0x2000;
export const IPV4_FRAG_OFFSET_MASK = 0x1fff;

// ---- IPv6 (RFC 8200)
export const IPV6_OFF_VER_TC_FL = 0;
export const IPV6_OFF_PAYLOAD_LEN = 4;
export const IPV6_OFF_NEXT_HDR = 6;
export const IPV6_OFF_HOP_LIMIT = 7;
export const IPV6_OFF_SRC = 8;
export const IPV6_OFF_DST = 24;
export const IPV6_ALEN = 16;

// ---- IP protocol numbers
export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_ICMPV6 = 58;

// ---- ICMP (RFC 792, RFC 1191) and ICMPv6 (RFC 4443): the error messages the data plane builds
export const ICMP_HLEN = 8;
export const ICMP_OFF_TYPE = 0;
export const ICMP_OFF_CODE = 1;
export const ICMP_OFF_CSUM = 2;
/** Destination unreachable / fragmentation needed: the next-hop MTU (RFC 1191). */
export const ICMP_OFF_NEXT_MTU = 6;
/** Packet too big: the MTU, 32 bits (RFC 4443 3.2). */
export const ICMPV6_OFF_MTU = 4;
export const ICMP_ECHO_REPLY = 0;
export const ICMP_DEST_UNREACH = 3;
export const ICMP_ECHO_REQUEST = 8;
export const ICMP_FRAG_NEEDED = 4;
export const ICMPV6_PKT_TOOBIG = 2;
/** ICMPv6 types below this are errors (RFC 4443 2.1). */
export const ICMPV6_INFO_MIN = 128;
/** IPv4 TOS of ICMP errors: precedence "internetwork control" (RFC 1812 4.3.2.5). */
export const IPTOS_PREC_INTERNETCONTROL = 0xc0;
/** The minimum IPv6 MTU (RFC 8200): an ICMPv6 error quotes as much as fits in it. */
export const IPV6_MIN_MTU = 1280;
export const DEFAULT_TTL = 64;

// ---- UDP (RFC 768)
export const UDP_OFF_SPORT = 0;
export const UDP_OFF_DPORT = 2;
export const UDP_OFF_LEN = 4;
export const UDP_OFF_CSUM = 6;

// ---- TCP (RFC 9293)
export const TCP_HLEN_MIN = 20;
export const TCP_OFF_SPORT = 0;
export const TCP_OFF_DPORT = 2;
export const TCP_OFF_SEQ = 4;
export const TCP_OFF_ACK = 8;
export const TCP_OFF_DOFF = 12; // data offset in the high nibble
export const TCP_OFF_FLAGS = 13;
export const TCP_OFF_WINDOW = 14;
export const TCP_OFF_CSUM = 16;
export const TCP_OFF_URG = 18;
export const TCP_FLAG_FIN = 0x01;
export const TCP_FLAG_SYN = 0x02;
export const TCP_FLAG_RST = 0x04;
export const TCP_FLAG_PSH = 0x08;
export const TCP_FLAG_ACK = 0x10;
export const TCP_FLAG_URG = 0x20;
export const TCP_FLAG_ECE = 0x40;
export const TCP_FLAG_CWR = 0x80;
