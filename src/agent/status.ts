/**
 * What the agent shows about itself: `vxtap network inspect`, `vxtap endpoint ls`, `vxtap stats` (and through them
 * the control socket and /metrics). Read at request time; the data plane never calls out.
 */
import { formatAddress6 } from '../common/addr.js';
import { native } from '../sys/native.js';
import { formatVtep, formatVtepPort } from '../common/vtep.js';
import { formatIpv4 } from '../vxlan/ipv4.js';
import { formatMac } from '../vxlan/mac.js';
import type { Agent } from './agent.js';
import type { Endpoint } from './endpoints.js';
import type { Network } from './networks.js';

export interface IoUringStatus {
  status: string;
  enters: number;
  ops: number;
  single_reads: number;
}

export interface CoalesceStatus {
  sends: number;
  datagrams: number;
}

export interface BusyPollStatus {
  window_us: number;
  hits: number;
  spin_seconds: number;
}

export async function describeNetwork(a: Agent, n: Network): Promise<Record<string, unknown>> {
  const endpoints = await a.endpointsOf(n.name);
  return {
    name: n.name,
    vni: n.vni,
    subnet: n.subnet.cidr,
    gateway: n.gateway ? formatIpv4(n.gateway) : null,
    ...(n.subnet6 ? { subnet6: n.subnet6.cidr, gateway6: n.gateway6 ? formatAddress6(n.gateway6) : null } : {}),
    mtu: n.mtu,
    learning: n.learning,
    internal: n.internal,
    allowTagged: n.allowTagged,
    encrypted: n.encrypted,
    ...(n.encrypted ? { keyRotationSec: n.keyRotationSec, keys: a.keyring.status()[n.name] ?? null } : {}),
    endpoints: endpoints.map((e) => ({
      name: e.name,
      ip: e.ip,
      ...(e.ip6 ? { ip6: e.ip6 } : {}),
      mac: e.mac,
      host: e.host,
      aliases: e.aliases,
    })),
    local: [...a.endpoints.values()].filter((e) => e.network === n.name).map((e) => describeEndpoint(e, a.host)),
    flood: a.fdb.vnets.get(n.vni)?.flood.map((r) => `${formatVtepPort(r.vtep, r.port)} (${r.kind})`) ?? [],
    fdb: a.fdbShow(n.name),
    stats: { ...a.dp.vniStats(n.vni) },
  };
}

export function describeEndpoint(e: Endpoint, host: string): Record<string, unknown> {
  return {
    name: e.name,
    network: e.network,
    netns: e.netns,
    ifname: e.tap.ifname,
    ip: formatIpv4(e.ip),
    ...(e.rec.ip6 ? { ip6: e.rec.ip6 } : {}),
    mac: formatMac(e.mac),
    host,
    tx_frames: e.port.txFrames,
    tx_bytes: e.port.txBytes,
    rx_frames: e.port.rxFrames,
    rx_bytes: e.port.rxBytes,
  };
}

export function agentStats(
  a: Agent,
  busyPollUs: number,
  reg: { registered: boolean; lease: string | null },
): Record<string, unknown> {
  const [rcvbuf, sndbuf] = native().sockInfo(a.dp.udpFd);
  return {
    host: a.host,
    vtep: formatVtepPort(a.vtep, a.port),
    socket: { rcvbuf, sndbuf, tx_sockets: a.dp.txSocketCount },
    offload: a.offload,
    ...(busyPollUs > 0 ? { busy_poll: busyPollStatus(busyPollUs) } : {}),
    io_uring: ioUringStatus(),
    udp_coalesced: coalesceStatus(),
    kv: { where: a.kv.where, ...reg, ...a.reconciler.status },
    counters: a.dp.counters.snapshot(),
    drops: a.dp.counters.drops(),
    vnis: Object.fromEntries(
      [...a.networks.values()].map((nw) => [nw.name, { vni: nw.vni, ...a.dp.vniStats(nw.vni) }]),
    ),
    fdb: a.fdb.size(),
    peers: a.fdb.peers().map((p) => ({
      vtep: formatVtep(p.vtep),
      tx_packets: p.tx_packets,
      tx_bytes: p.tx_bytes,
      rx_packets: p.rx_packets,
      rx_bytes: p.rx_bytes,
    })),
    endpoints: [...a.endpoints.values()].map((e) => describeEndpoint(e, a.host)),
    reservations: [...a.reservations.keys()],
    ...(a.dnsStats ? { dns: { ...a.dnsStats } } : {}),
  };
}

/** The TAP batches' io_uring: on/off (why), io_uring_enter calls and the reads/writes they carried, and the TAP
 * reads that took the single-frame path (plain read() calls: the last read found at most one frame). */
export function ioUringStatus(): IoUringStatus {
  const [status, enters, ops, single] = native().ioUring();
  return { status, enters, ops, single_reads: single };
}

/** UDP GSO sends that carried 2+ queued datagrams (sendBatch's coalescing), and those datagrams. */
export function coalesceStatus(): CoalesceStatus {
  const [sends, datagrams] = native().coalesceStats();
  return { sends, datagrams };
}

/** Busy polling (--busy-poll): its window, polls that caught a packet, seconds spent polling; null when off. */
export function busyPollStatus(windowUs: number): BusyPollStatus | null {
  if (windowUs === 0) return null;
  const [hits, spinNs] = native().busyPoll();
  return { window_us: windowUs, hits, spin_seconds: Math.round(spinNs / 1e6) / 1e3 };
}
