/** A local endpoint as the data plane holds it: its TAP fd, its MAC and its VNI's tables. */
import type { LocalPort, Vnet } from '../fdb/fdb.js';
import type { PollHandle } from '../sys/native.js';
import type { VniCounters } from './counters.js';

export interface Port extends LocalPort {
  readonly id: string;
  readonly mac: number;
  readonly vni: number;
  readonly fd: number;
  readonly ifname: string;
  /** This VNI's tables and counters, for the hot path. */
  vnet: Vnet<Port>;
  vstats: VniCounters;
  poll: PollHandle | null;
  /** Frames/bytes the endpoint sent (read from its TAP) and received (written to its TAP). */
  txFrames: number;
  txBytes: number;
  rxFrames: number;
  rxBytes: number;
}
