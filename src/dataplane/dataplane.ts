/**
 * The forwarding engine: owns the arenas, the output queues, the poll handles and the ports; xmit.ts and rcv.ts
 * hold the per-direction logic. It reads the FDB and never waits on anything but the kernel: the control plane
 * writes the FDB between batches (Node runs one callback at a time, so a batch always sees consistent tables).
 *
 * Memory: two arenas (xmit, rcv) of `batch` slots each, allocated once. A slot is
 *   [ headroom | frame ... ]   the frame is read at `headroom`; encap writes the VXLAN header just in front of
 * it, decap takes a subarray after it. Nothing is allocated per packet.
 */
import { Fdb, FdbError, VniCounters } from '../fdb/fdb.js';
import type { PollHandle } from '../sys/native.js';
import { readU32 } from '../vxlan/ethernet.js';
import { VXLAN_HLEN } from '../vxlan/constants.js';
import { VNET_HDR_LEN } from '../vxlan/gso.js';
import type { Arena, RcvArena, RcvContext, XmitContext } from './context.js';
import { Counters } from './counters.js';
import { Gro } from './gro.js';
import { type DataplaneAead, type DataplaneIo, POLL_READABLE } from './io.js';
import { native } from '../sys/native.js';
import { checkKernels, jsKernels, type Kernels } from './kernels.js';
import { OutQueue, WrittenPorts } from './out.js';
import type { Port } from './port.js';
import { rcv } from './rcv.js';
import { xmit } from './xmit.js';

export interface DataplaneOptions {
  io: DataplaneIo;
  /** The per-byte kernels (default: the JS references); any other set is checked against them first. */
  kernels?: Kernels;
  fdb: Fdb<Port>;
  /** The socket bound to the VXLAN port: everything is received here. */
  udpFd: number;
  /** Transmit sockets; the inner flow hash picks one, so its port is the outer source port. */
  txFds: number[];
  /** UDP destination port for learned remote MACs (the port peers listen on). */
  vxlanPort: number;
  /** Frames per batch (<= native MAX_BATCH). Default 64. */
  batch?: number;
  /** Bytes before each frame in a slot (>= 8 for the VXLAN header). Default 64. */
  headroom?: number;
  /** Largest datagram/frame a slot holds. Default 65535 (a kernel peer on a veth can send 64 KB GSO datagrams). */
  frameMax?: number;
  /** Seed for the flow hash. */
  hashSeed?: number;
  /** Storm control: broadcast, multicast and unknown-unicast frames a second each endpoint may send on average
   * (0: off). Default 2000; bursts of stormBurst (default twice that) pass. */
  stormPps?: number;
  stormBurst?: number;
  /** Ports may carry virtio-net headers with TSO super-frames: reserve the GSO regions, merge on receive. */
  offload?: boolean;
  /** The VXLAN socket has UDP_GRO on: receive buffers may hold several datagrams. */
  udpGro?: boolean;
  /** The AEAD calls for encrypted networks (default: the addon's, if it loads). */
  aead?: DataplaneAead | null;
  /** Called when a port's TAP fails (device gone with its namespace, fd closed under us). */
  onPortError?: (port: Port, err: Error) => void;
  /** Called when a callback throws: a bug, but the loop must keep going. */
  onLoopError?: (err: unknown) => void;
}

/** Storm control's default: far above what ARP, neighbour discovery, DHCP or mDNS send, far below a storm. */
export const DEFAULT_STORM_PPS = 2000;

/** Batches drained per readiness callback before yielding to the event loop. */
const DRAIN_BATCHES = 8;

export class Dataplane implements XmitContext, RcvContext {
  readonly io: DataplaneIo;
  readonly aead: DataplaneAead | null;
  readonly kernels: Kernels;
  readonly fdb: Fdb<Port>;
  readonly counters = new Counters();
  readonly udpFd: number;
  readonly txFds: Int32Array;
  readonly txSocketCount: number;
  readonly vxlanPort: number;
  readonly batch: number;
  readonly headroom: number;
  readonly slotSize: number;
  readonly hashSeed: number;
  readonly stormPps: number;
  readonly stormBurst: number;
  readonly tx: Arena;
  readonly rx: RcvArena;
  readonly ports = new Map<string, Port>();
  /** Ports the receive path wrote to in the current callback: see readAnswers. */
  private readonly written = new WrittenPorts();
  private udpPoll: PollHandle | null = null;
  private readonly onPortError: (port: Port, err: Error) => void;
  private readonly onLoopError: (err: unknown) => void;
  readonly now: () => number;

  constructor(o: DataplaneOptions) {
    this.io = o.io;
    this.aead = o.aead !== undefined ? o.aead : defaultAead();
    this.kernels = o.kernels ?? jsKernels;
    checkKernels(this.kernels);
    this.fdb = o.fdb;
    this.now = o.fdb.now;
    this.udpFd = o.udpFd;
    if (o.txFds.length < 1 || o.txFds.length > 64) throw new RangeError('txFds: 1 to 64 transmit sockets');
    this.txFds = Int32Array.from(o.txFds);
    this.txSocketCount = o.txFds.length;
    this.vxlanPort = o.vxlanPort;
    this.batch = o.batch ?? 64;
    if (!Number.isInteger(this.batch) || this.batch < 1 || this.batch > 256) throw new RangeError('batch: 1..256');
    this.headroom = o.headroom ?? 64;
    if (this.headroom < VXLAN_HLEN) throw new RangeError(`headroom must be at least ${VXLAN_HLEN}`);
    const frameMax = o.frameMax ?? 65535 + 64; // a 64 KB TSO super-frame plus its virtio-net header fits
    this.slotSize = Math.ceil((this.headroom + frameMax) / 64) * 64;
    this.hashSeed = o.hashSeed ?? 0;
    this.stormPps = o.stormPps ?? DEFAULT_STORM_PPS;
    this.stormBurst = o.stormBurst ?? 2 * this.stormPps;
    if (!(this.stormPps >= 0 && this.stormBurst >= 1)) throw new RangeError('stormPps >= 0 and stormBurst >= 1');
    const mk = (reason: 'tx_tap_error' | 'rx_tap_error', gso: number, written: WrittenPorts | null): Arena => {
      const arena = new Uint8Array(this.slotSize * this.batch + gso);
      const base = this.slotSize * this.batch;
      return {
        arena,
        lens: new Int32Array(this.batch),
        out: new OutQueue(this.io, arena, this.txFds, this.counters, reason, written, this.aead),
        scratch: new Uint8Array(128),
        gsoBase: base,
        gsoCursor: base,
      };
    };
    // TSO output: a super-frame of up to 64 KB grows by a VXLAN + copied headers per segment (< 16 KB in all)
    this.tx = mk('tx_tap_error', o.offload ? this.batch * (this.slotSize + 16384) : 0, null);
    const rx = mk('rx_tap_error', o.offload ? this.batch * (this.slotSize + 1024) : 0, this.written);
    this.rx = {
      ...rx,
      addrs: new Uint32Array(this.batch * 2),
      gsoSizes: o.udpGro ? new Int32Array(this.batch) : null,
      gro: o.offload ? new Gro(rx.arena, rx.gsoBase, rx.out, this.counters, this.kernels) : null,
      open: null,
    };
    this.onPortError = o.onPortError ?? (() => {});
    this.onLoopError = o.onLoopError ?? ((e) => console.error('vxtap: data plane callback failed:', e));
  }

  // ---- VNIs and ports (control plane side)

  addVni(vni: number, learning: boolean): void {
    this.fdb.addVni(vni, learning);
  }

  delVni(vni: number): void {
    for (const p of this.ports.values()) {
      if (p.vni === vni) throw new FdbError('EBUSY', `VNI ${vni} still has endpoint ${p.id}`);
    }
    this.fdb.delVni(vni);
  }

  /** The VNI's traffic counters (zeros for a VNI that is not here). */
  vniStats(vni: number): VniCounters {
    return this.fdb.vnets.get(vni)?.counters ?? new VniCounters();
  }

  /** Adds a local endpoint and starts reading its TAP. */
  addPort(spec: {
    id: string;
    mac: number;
    vni: number;
    fd: number;
    ifname: string;
    ip?: number;
    mtu?: number;
    vnetHdr?: boolean;
    uso?: boolean;
    /** Check IPv6 sources against the link-local address of the MAC (the agent does; tests may not). */
    checkIpv6Source?: boolean;
    /** The endpoint's IPv6 address (16 bytes) on a dual-stack network: also a source it may use. */
    ip6?: Uint8Array | null;
    /** Forward VLAN-tagged frames from this endpoint (default: drop them). */
    allowTagged?: boolean;
  }): Port {
    if (this.ports.has(spec.id)) throw new FdbError('EEXIST', `endpoint ${spec.id} is already attached`);
    const vnet = this.fdb.vnet(spec.vni);
    const port: Port = {
      ...spec,
      ip: spec.ip ?? 0,
      mtu: spec.mtu ?? 65535,
      vnetHdrLen: spec.vnetHdr ? VNET_HDR_LEN : 0,
      ll6Hi: spec.checkIpv6Source ? eui64Hi(spec.mac) : 0,
      ll6Lo: spec.checkIpv6Source ? eui64Lo(spec.mac) : 0,
      ip6w0: spec.ip6 ? readU32(spec.ip6, 0) : 0,
      ip6w1: spec.ip6 ? readU32(spec.ip6, 4) : 0,
      ip6w2: spec.ip6 ? readU32(spec.ip6, 8) : 0,
      ip6w3: spec.ip6 ? readU32(spec.ip6, 12) : 0,
      allowTagged: !!spec.allowTagged,
      stormTokens: this.stormBurst,
      stormStamp: this.now(),
      uso: !!spec.vnetHdr && !!spec.uso,
      vnet,
      poll: null,
      written: false,
      txFrames: 0,
      txBytes: 0,
      rxFrames: 0,
      rxBytes: 0,
    };
    if (!this.fdb.set(spec.vni, spec.mac, 'local', { local: port })) {
      throw new FdbError('EEXIST', `MAC of ${spec.id} is already a local endpoint on VNI ${spec.vni}`);
    }
    this.ports.set(spec.id, port);
    port.poll = this.io.pollStart(port.fd, POLL_READABLE, (status) => this.onTapReadable(port, status));
    return port;
  }

  /** Stops reading the port's TAP and removes its FDB entry. The TAP fd is the caller's to close. */
  removePort(id: string): Port | undefined {
    const port = this.ports.get(id);
    if (!port) return undefined;
    if (port.poll) this.io.pollStop(port.poll);
    port.poll = null;
    this.fdb.del(port.vni, port.mac, 'local');
    this.ports.delete(id);
    return port;
  }

  // ---- loop

  start(): void {
    if (this.udpPoll) return;
    this.udpPoll = this.io.pollStart(this.udpFd, POLL_READABLE, (status) => this.onUdpReadable(status));
  }

  stop(): void {
    if (this.udpPoll) this.io.pollStop(this.udpPoll);
    this.udpPoll = null;
    for (const p of this.ports.values()) {
      if (p.poll) this.io.pollStop(p.poll);
      p.poll = null;
    }
  }

  private onUdpReadable(status: number): void {
    if (status < 0) {
      this.onLoopError(new Error(`poll on the VXLAN socket failed: status ${status}`));
      return;
    }
    try {
      for (let k = 0; k < DRAIN_BATCHES; k++) if (rcv(this) < this.batch) break;
    } catch (e) {
      this.onLoopError(e);
    }
    this.readAnswers();
  }

  /**
   * A frame written to a TAP runs the container's stack inside the write: its answer (an echo reply, a TCP ACK)
   * is often in the TAP's queue before the write returns. Reading each written TAP now, instead of after one more
   * trip through the event loop (epoll, the poll callback, the JS entry), takes that trip off every request/
   * response exchange; a TAP with nothing queued costs one read that returns EAGAIN. Only the receive path's
   * writes are followed, and once per callback, so local traffic cannot keep the loop here.
   */
  private readAnswers(): void {
    const w = this.written;
    for (let i = 0; i < w.count; i++) {
      const port = w.list[i]!;
      w.list[i] = null;
      port.written = false;
      if (port.poll !== null) this.onTapReadable(port, 0);
    }
    w.count = 0;
  }

  private onTapReadable(port: Port, status: number): void {
    if (port.poll === null) return;
    if (status < 0) {
      this.portFailed(port, new Error(`poll on ${port.ifname} failed: status ${status}`));
      return;
    }
    try {
      for (let k = 0; k < DRAIN_BATCHES; k++) if (xmit(this, port) < this.batch) break;
    } catch (e) {
      // a read error means the TAP is gone (EBADFD when its namespace was deleted) or the fd is broken
      this.portFailed(port, e instanceof Error ? e : new Error(String(e)));
    }
  }

  private portFailed(port: Port, err: Error): void {
    if (port.poll) this.io.pollStop(port.poll);
    port.poll = null;
    this.onPortError(port, err);
  }
}

function defaultAead(): DataplaneAead | null {
  try {
    return native();
  } catch {
    return null; // no addon (unit tests of the logic): no encrypted network can be keyed either
  }
}

/** The modified EUI-64 interface identifier of a MAC (RFC 4291 appendix A): its first and second 32-bit words. */
function eui64Hi(mac: number): number {
  const hi = Math.floor(mac / 0x1000000); // the first three bytes
  return (((hi ^ 0x020000) << 8) | 0xff) >>> 0;
}

function eui64Lo(mac: number): number {
  return (0xfe000000 | (mac % 0x1000000)) >>> 0;
}
