/**
 * What the per-direction forwarding functions (xmit.ts, rcv.ts) read from the data plane: its I/O, tables,
 * counters, kernels and the arena of their direction. The Dataplane class implements both; tests may hand in
 * anything of this shape. xmit and rcv import only these types, never the Dataplane.
 */
import type { Fdb } from '../fdb/fdb.js';
import type { Counters } from './counters.js';
import type { Gro } from './gro.js';
import type { DataplaneAead, DataplaneIo } from './io.js';
import type { OpenBatch } from '../fdb/sec.js';
import type { Kernels } from './kernels.js';
import type { OutQueue } from './out.js';
import type { Port } from './port.js';

/** One direction's memory: `batch` slots of `slotSize` bytes, each frame read at `headroom`. */
export interface Arena {
  arena: Uint8Array;
  lens: Int32Array;
  out: OutQueue;
  /** 128 bytes for building control replies (ICMP quotes) without allocating. */
  scratch: Uint8Array;
  /** Where the GSO region (TSO output, GRO super-frames) starts in the arena, and its fill level in this batch. */
  gsoBase: number;
  gsoCursor: number;
}

/** The receive arena also holds each datagram's source address and UDP GRO segment size, and the GRO state. */
export interface RcvArena extends Arena {
  addrs: Uint32Array;
  gsoSizes: Int32Array | null;
  gro: Gro | null;
  /** Scratch for opening sealed datagrams (rcv.ts makes it when the first one arrives). */
  open: OpenBatch | null;
}

interface Common {
  readonly io: DataplaneIo;
  /** Seal and open for encrypted networks; null without the addon (then no network has keys). */
  readonly aead: DataplaneAead | null;
  readonly fdb: Fdb<Port>;
  readonly counters: Counters;
  readonly batch: number;
  readonly slotSize: number;
  readonly headroom: number;
  readonly now: () => number;
}

export interface XmitContext extends Common {
  readonly kernels: Kernels;
  readonly hashSeed: number;
  /** Storm control: flood frames a second per endpoint (0: off), and the burst allowed. */
  readonly stormPps: number;
  readonly stormBurst: number;
  readonly txSocketCount: number;
  readonly tx: Arena;
}

export interface RcvContext extends Common {
  readonly kernels: Kernels;
  readonly udpFd: number;
  /** UDP destination port for learned remote MACs (the port peers listen on). */
  readonly vxlanPort: number;
  readonly rx: RcvArena;
}
