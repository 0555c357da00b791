/** A local endpoint as the data plane holds it: its TAP fd, its MAC and its VNI's tables. */
import type { LocalPort, Vnet } from '../fdb/fdb.js';
import type { PollHandle } from '../sys/native.js';

export interface Port extends LocalPort {
  readonly id: string;
  readonly mac: number;
  readonly vni: number;
  readonly fd: number;
  readonly ifname: string;
  /** The endpoint's IPv4 address (host order): the only IPv4 source it may use. 0: not checked. */
  readonly ip: number;
  /** Overlay MTU: larger frames are refused (IPv4 with DF: answered with ICMP fragmentation needed). */
  readonly mtu: number;
  /** 10 when the TAP was opened with IFF_VNET_HDR (offloads: every read and write carries a virtio-net header), else 0. */
  readonly vnetHdrLen: number;
  /** The endpoint's IPv6 link-local interface identifier (EUI-64 of its MAC) as two words; 0/0: IPv6 sources are
   * not checked. */
  readonly ll6Hi: number;
  readonly ll6Lo: number;
  /** The endpoint's IPv6 address on a dual-stack network, as four words (unsigned); all 0: none (then only the
   * link-local address is its own). */
  readonly ip6w0: number;
  readonly ip6w1: number;
  readonly ip6w2: number;
  readonly ip6w3: number;
  /** 802.1Q/802.1ad-tagged frames from the endpoint are forwarded (the network allows tags); else dropped. */
  readonly allowTagged: boolean;
  /** Storm control's token bucket: flood frames this endpoint may still send, and when it was last filled (ms). */
  stormTokens: number;
  stormStamp: number;
  /** The TAP takes UDP_L4 super-frames (its kernel took USO): the receive path may merge UDP datagrams for it. */
  readonly uso: boolean;
  /** This VNI's tables and counters, for the hot path. */
  vnet: Vnet<Port>;
  poll: PollHandle | null;
  /** The receive path wrote to this TAP in the current callback: the data plane reads it before going back to
   * the event loop (OutQueue.written, Dataplane.readAnswers). */
  written: boolean;
  /** Frames/bytes the endpoint sent (read from its TAP) and received (written to its TAP). */
  txFrames: number;
  txBytes: number;
  rxFrames: number;
  rxBytes: number;
}
