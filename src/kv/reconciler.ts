/**
 * The reconciler: keeps a ClusterState equal to what the KV store says, and calls `apply` with what changed
 * (a Changes: the keys, with their records from before), so the agent can update its FDB entries, flood lists
 * and ARP tables for exactly those keys.
 *
 * - start(): list everything under /vxtap/v1/ at revision R, apply it, then watch from R.
 * - Events are applied in order, and `apply` is called once per event batch. apply must be idempotent (it
 *   compares desired against current for each key it is given).
 * - A re-list (full resync) is compared with the state key by key (ClusterState.replace): only records whose
 *   value differs are parsed and passed on, so a resync that finds nothing new costs a string compare per key,
 *   not a rebuild of every table (which held the data plane's thread for long with many endpoints: history.md 13).
 * - ERR_KV_COMPACTED (or a watch the server dropped): re-list (a full resync).
 * - ERR_KV_UNAVAILABLE: nothing changes; the tables keep forwarding on the last known state, the backend
 *   resumes the watch when it can, and on reconnect the reconciler re-lists at once (a full resync repairs
 *   anything the outage hid); the periodic resync retries the list meanwhile.
 * - Every `resyncMs` (default 30 s, +-10 % so agents spread out) the reconciler checks that it has missed nothing:
 *   it reads the store's current revision (a one-key range) and, when the watch has not reached it within 2 s,
 *   re-lists (level-triggered repair of a watch that stalled without an error). A watch that is current costs
 *   that one small read instead of a list of the whole cluster on every agent.
 * - waitFor(rev) resolves once the state includes revision `rev`: read-your-writes for the agent's own changes.
 */
import type { Kv, KvError, Watch } from './kv.js';
import { Changes, ClusterState, keys, ROOT } from './schema.js';

/** A one-key range: its answer carries the store's current revision. */
const PROBE = keys.guardNetworks;
/** How long a periodic check gives the watch to reach the store's revision before it re-lists. */
const CATCH_UP_MS = 2000;

export interface ReconcilerStatus {
  revision: number;
  lastFullSync: number;
  fullSyncs: number;
  /** ms timestamp: the last time the state was confirmed current (a full re-list, or a check that found the
   * watch at the store's revision). */
  lastVerified: number;
  /** Periodic checks that found the watch current, so no re-list was needed. */
  checksCurrent: number;
  watchErrors: number;
  reconnects: number;
  connected: boolean;
  lastError: string | null;
  invalidRecords: number;
}

export class Reconciler {
  readonly state = new ClusterState();
  private watch: Watch | null = null;
  private watchGen = 0;
  private revision = 0;
  private timer: NodeJS.Timeout | null = null;
  private waiters: { rev: number; resolve: () => void }[] = [];
  private stopped = false;
  private resyncing: Promise<void> | null = null;
  readonly status: ReconcilerStatus = {
    revision: 0,
    lastFullSync: 0,
    fullSyncs: 0,
    lastVerified: 0,
    checksCurrent: 0,
    watchErrors: 0,
    reconnects: 0,
    connected: false,
    lastError: null,
    invalidRecords: 0,
  };

  constructor(
    private readonly kv: Kv,
    private readonly apply: (changes: Changes) => void,
    private readonly onError: (err: Error) => void,
    private readonly resyncMs = 30_000,
  ) {}

  /** First full sync (a failure is reported through onError and retried by the periodic resync), then the timer. */
  async start(): Promise<void> {
    await this.resync();
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    const jitter = 0.9 + 0.2 * Math.random();
    this.timer = setTimeout(() => {
      void this.check().finally(() => this.schedule());
    }, this.resyncMs * jitter);
    this.timer.unref();
  }

  /** The periodic check: re-lists only when the watch is disconnected or has fallen behind the store. */
  private async check(): Promise<void> {
    if (this.status.connected && !this.resyncing) {
      try {
        const { revision } = await this.kv.list(PROBE);
        if (revision > this.revision) await this.waitFor(revision, CATCH_UP_MS);
        if (this.stopped) return;
        if (this.revision >= revision) {
          this.status.checksCurrent++;
          this.status.lastVerified = Date.now();
          return;
        }
      } catch {
        // the re-list below reports the store's state
      }
    }
    await this.resync();
  }

  /** Re-lists and re-applies everything; concurrent calls share one run. Never throws. */
  resync(): Promise<void> {
    this.resyncing ??= this.fullSync()
      .catch((e) => {
        this.status.connected = false;
        this.status.lastError = (e as Error).message;
        this.onError(e as Error);
      })
      .finally(() => (this.resyncing = null));
    return this.resyncing;
  }

  private async fullSync(): Promise<void> {
    const { entries, revision } = await this.kv.list(ROOT);
    if (this.stopped) return;
    const changes = this.state.replace(entries);
    this.revision = revision;
    this.status.revision = revision;
    this.status.lastFullSync = Date.now();
    this.status.lastVerified = this.status.lastFullSync;
    this.status.fullSyncs++;
    this.status.connected = true;
    this.status.lastError = null;
    this.status.invalidRecords = this.state.invalid;
    if (!changes.empty) this.apply(changes);
    this.rewatch();
    this.wake();
  }

  private rewatch(): void {
    this.watch?.close();
    // a closed watch may still report (etcd3 ends its stream with an error): only the current one counts
    const gen = ++this.watchGen;
    this.watch = this.kv.watch(ROOT, this.revision, {
      events: (evs, rev) => {
        if (gen !== this.watchGen) return;
        const changes = new Changes();
        for (const ev of evs) {
          if (ev.modRevision <= this.revision) continue; // already in the state (a list raced the watch)
          this.state.apply(ev.key, ev.value, changes);
        }
        this.revision = Math.max(this.revision, rev);
        this.status.revision = this.revision;
        this.status.connected = true;
        this.status.invalidRecords = this.state.invalid;
        if (!changes.empty) this.apply(changes);
        this.wake();
      },
      error: (err: KvError) => {
        if (gen !== this.watchGen) return;
        this.status.watchErrors++;
        this.status.lastError = err.message;
        if (err.code === 'ERR_KV_COMPACTED') {
          void this.resync();
        } else {
          this.status.connected = false;
        }
        this.onError(err);
      },
      reconnected: () => {
        if (gen !== this.watchGen) return;
        this.status.reconnects++;
        void this.resync();
      },
    });
  }

  /** Resolves when the state has caught up with `rev` (or after timeoutMs, then the caller may re-list). */
  waitFor(rev: number, timeoutMs = 5000): Promise<void> {
    if (this.revision >= rev) return Promise.resolve();
    return new Promise((resolve) => {
      const w = { rev, resolve };
      this.waiters.push(w);
      setTimeout(() => {
        this.waiters = this.waiters.filter((x) => x !== w);
        resolve();
      }, timeoutMs).unref();
    });
  }

  private wake(): void {
    const ready = this.waiters.filter((w) => w.rev <= this.revision);
    this.waiters = this.waiters.filter((w) => w.rev > this.revision);
    for (const w of ready) w.resolve();
  }

  get currentRevision(): number {
    return this.revision;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.watch?.close();
    this.watch = null;
    for (const w of this.waiters) w.resolve();
    this.waiters = [];
  }
}
