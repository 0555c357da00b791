/**
 * The reconciler: keeps a ClusterState equal to what the KV store says, and calls `apply` with the networks
 * that changed, so the agent can turn the state into FDB entries, flood lists and ARP tables.
 *
 * - start(): list everything under /vxtap/v1/ at revision R, apply all, then watch from R.
 * - Events are applied in order, and `apply` is called once per event batch with the set of changed networks
 *   ('*' = host records changed: every network). apply must be idempotent (it diffs desired against current).
 * - ERR_KV_COMPACTED (or a watch the server dropped): re-list and apply all (a full resync).
 * - ERR_KV_UNAVAILABLE: nothing changes; the tables keep forwarding on the last known state, the backend
 *   resumes the watch when it can, and on reconnect the reconciler re-lists at once (a full resync repairs
 *   anything the outage hid); the periodic resync retries the list meanwhile.
 * - Every `resyncMs` (default 30 s) a full list is applied anyway (level-triggered repair of anything missed).
 * - waitFor(rev) resolves once the state includes revision `rev`: read-your-writes for the agent's own changes.
 */
import type { Kv, KvError, Watch } from './kv.js';
import { ClusterState, ROOT } from './schema.js';

export interface ReconcilerStatus {
  revision: number;
  lastFullSync: number;
  fullSyncs: number;
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
  readonly status: ReconcilerStatus = { revision: 0, lastFullSync: 0, fullSyncs: 0, watchErrors: 0, reconnects: 0, connected: false, lastError: null, invalidRecords: 0 };

  constructor(
    private readonly kv: Kv,
    private readonly apply: (changed: Set<string>) => void,
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
    this.timer = setTimeout(() => {
      void this.resync().finally(() => this.schedule());
    }, this.resyncMs);
    this.timer.unref();
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
    this.state.clear();
    for (const e of entries) this.state.apply(e.key, e.value);
    this.revision = revision;
    this.status.revision = revision;
    this.status.lastFullSync = Date.now();
    this.status.fullSyncs++;
    this.status.connected = true;
    this.status.lastError = null;
    this.status.invalidRecords = this.state.invalid;
    this.apply(new Set(['*']));
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
        const changed = new Set<string>();
        for (const ev of evs) {
          if (ev.modRevision <= this.revision) continue; // already in the state (a list raced the watch)
          const n = this.state.apply(ev.key, ev.value);
          if (n) changed.add(n);
        }
        this.revision = Math.max(this.revision, rev);
        this.status.revision = this.revision;
        this.status.connected = true;
        this.status.invalidRecords = this.state.invalid;
        if (changed.size) this.apply(changed);
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
