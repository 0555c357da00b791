/** What `vxtap agent` can be told: the Agent's options (src/cli/main.ts maps the command line onto them). */
import type { Logger } from '../common/log.js';
import type { DataplaneIo } from '../dataplane/io.js';
import type { Kv } from '../kv/kv.js';
import type { KvSecurity } from '../kv/open.js';

export interface AgentOptions {
  /** This host's name (default: the OS hostname). Must be unique in the cluster. */
  host?: string;
  /** Underlay address (IPv4, or IPv6 for VXLAN over UDP/IPv6) to bind and send from: this host's VTEP address. */
  vtep: string;
  /** UDP port VXLAN listens on and sends to (default 4789, IANA). */
  port?: number;
  /** KV store: `etcd://host:port[,...]` or a file path (default /var/lib/vxtap/store.db), or an open Kv. */
  kv?: string | Kv;
  /** TLS and user/password for etcd (files; see kv/open.ts). */
  kvSecurity?: KvSecurity;
  /** Allow encrypted networks to be created over a store that is not confidential (etcd without TLS): their keys
   * then cross the network in clear. Default false (refused with the reason). */
  insecureKv?: boolean;
  /** Host lease TTL in seconds: a dead host's endpoints vanish from the others this long after it died (default 10). */
  leaseTtl?: number;
  /** Where the local state file lives (default /var/lib/vxtap). */
  stateDir?: string;
  /** Full KV resync period (default 30 s). */
  resyncMs?: number;
  txSockets?: number;
  batch?: number;
  /**
   * Busy polling: after each data-plane callback, keep the thread polling (yielding between polls) instead of
   * sleeping for this many microseconds (0, the default: off). Packets then find the agent running: lower and
   * steadier latency, for a CPU kept busy while traffic flows. Process-wide (one agent per process). 0 to 10 s.
   */
  busyPollUs?: number;
  /** Storm control: broadcast, multicast and unknown-unicast frames a second each endpoint may send (bursts of
   * twice that); 0 turns it off. Default 2000. */
  stormPps?: number;
  /** Networks created without a subnet get the first free block of this pool (default 10.0.0.0/8, as Docker's
   * swarm overlay). Every agent that creates networks should be given the same pool. */
  pool?: string;
  /** Dual-stack networks created without an IPv6 subnet get the first free /64 of this pool (default
   * fd76:7874:6170::/48, a unique local prefix). The same on every agent, as `pool`. */
  pool6?: string;
  /** The size of those blocks, as a prefix length (default 24). */
  poolPrefix?: number;
  /** TAP reads and writes batched through io_uring (one submission per batch instead of one syscall per frame)
   * when the kernel allows it. Default true; false: one syscall per frame. Process-wide. */
  ioUring?: boolean;
  /** TAP offloads (virtio-net header, checksum offload, TSO4/TSO6/USO split in userspace + UDP GSO). Default true. */
  offload?: boolean;
  rcvbuf?: number;
  sndbuf?: number;
  /** Learned MACs expire after this many seconds (default 300). */
  ageingSec?: number;
  maxLearned?: number;
  log?: Logger;
  /** For tests: another I/O backend. */
  io?: DataplaneIo;
}
