/**
 * The agent's local state file, `<stateDir>/<host>.json`: enough to re-adopt every local endpoint after a restart
 * without the KV store (the TAPs are persistent), and the addresses reserved for endpoints to come.
 */
import { existsSync, readFileSync } from 'node:fs';
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
  /** The TAP was opened with IFF_VNET_HDR (offloads): it must be re-opened the same way. */
  vnetHdr?: boolean;
  /** Inode of the namespace at attach time: a namespace recreated under the same name is another container. */
  nsIno: number;
}

export interface AgentState {
  endpoints: LocalRecord[];
  reservations: Reservation[];
}

export class StateFile {
  readonly path: string;

  constructor(
    stateDir: string,
    private readonly host: string,
    private readonly log: Logger,
  ) {
    this.path = join(stateDir, `${host}.json`);
  }

  /** The saved state; null when there is none or it cannot be read (said in the log). */
  load(): AgentState | null {
    if (!existsSync(this.path)) return null;
    try {
      const st = JSON.parse(readFileSync(this.path, 'utf8')) as Partial<AgentState>;
      if (!Array.isArray(st.endpoints)) throw new Error('no endpoints array');
      const reservations = (st.reservations ?? []).filter(
        (r) => typeof r?.network === 'string' && typeof r.ip === 'string',
      );
      return { endpoints: st.endpoints, reservations };
    } catch (e) {
      this.log.error('state file unreadable; starting without local endpoints', { path: this.path, err: e });
      return null;
    }
  }

  save(st: AgentState): void {
    writeStateFile(this.path, { version: 1, host: this.host, ...st });
  }
}
