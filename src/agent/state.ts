/**
 * The agent's local state file, `<stateDir>/<host>.json`: enough to re-adopt every local endpoint after a restart
 * without the KV store (the TAPs are persistent), the addresses reserved for endpoints to come, and the intents:
 * attachments begun and not finished. An intent is written (and flushed) before an attachment touches the store
 * or the kernel, and replaced by the endpoint's record when it is done, so a restart after a crash knows what a
 * half-done attachment may have left and undoes it. The file is replaced atomically (common/statefile.ts).
 */
import { existsSync, readFileSync, renameSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../common/log.js';
import { writeStateFile } from '../common/statefile.js';
import type { Published, Reservation } from './registration.js';

/** What the state file keeps per local endpoint. */
export interface LocalRecord extends Published {
  vni: number;
  mtu: number;
  subnet: string;
  gateway: string | null;
  /** Dual stack: the network's IPv6 subnet and gateway (the address itself is `ip6`). */
  subnet6?: string;
  gateway6?: string | null;
  /** The TAP was opened with IFF_VNET_HDR (offloads): it must be re-opened the same way. */
  vnetHdr?: boolean;
  /** The network forwards VLAN-tagged frames (as it did at attach). */
  allowTagged?: boolean;
  /** An encrypted network: recovered before the store answers, it forwards nothing between hosts until its keys
   * come (never in clear). */
  encrypted?: boolean;
  /** Inode of the namespace at attach time: a namespace recreated under the same name is another container. */
  nsIno: number;
}

/** An attachment under way: what it may have claimed (the name; the address and MAC are found by it). */
export interface Intent {
  name: string;
  network: string;
  netns: string;
}

export interface AgentState {
  endpoints: LocalRecord[];
  reservations: Reservation[];
  intents: Intent[];
}

/** What load() found: a state, none (a first start, or a deleted file), or a file it could not read. */
export type Loaded =
  { status: 'ok'; state: AgentState } | { status: 'missing' } | { status: 'corrupt'; movedTo: string };

export class StateFile {
  readonly path: string;

  constructor(
    stateDir: string,
    private readonly host: string,
    private readonly log: Logger,
  ) {
    this.path = join(stateDir, `${host}.json`);
  }

  /** The saved state. A file that cannot be read is moved aside (never overwritten: an operator may want it). */
  load(): Loaded {
    if (!existsSync(this.path)) return { status: 'missing' };
    try {
      const st = JSON.parse(readFileSync(this.path, 'utf8')) as Partial<AgentState>;
      if (!Array.isArray(st.endpoints)) throw new Error('no endpoints array');
      const reservations = (st.reservations ?? []).filter(
        (r) => typeof r?.network === 'string' && typeof r.ip === 'string',
      );
      const intents = (st.intents ?? []).filter(
        (i) => typeof i?.name === 'string' && typeof i.network === 'string' && typeof i.netns === 'string',
      );
      return { status: 'ok', state: { endpoints: st.endpoints, reservations, intents } };
    } catch (e) {
      const movedTo = `${this.path}.corrupt-${new Date().toISOString().replace(/[:.]/g, '-')}`;
      try {
        renameSync(this.path, movedTo);
      } catch {
        /* reported below with the path it still has */
      }
      this.log.error('STATE FILE UNREADABLE: moved aside; local endpoints are rebuilt from their TAPs and the store', {
        path: this.path,
        movedTo,
        err: e,
      });
      return { status: 'corrupt', movedTo };
    }
  }

  save(st: AgentState): void {
    writeStateFile(this.path, { version: 1, host: this.host, ...st });
  }
}
