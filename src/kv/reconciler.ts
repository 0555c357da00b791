/**
 * The reconciler: keeps a ClusterState equal to what the KV store says about the records this host needs, and
 * calls `apply` with what changed (a Changes: the keys, with their records from before), so the agent can update
 * its FDB entries, flood lists and ARP tables for exactly those keys.
 *
 * What it follows is a set of scopes, each a key prefix with its own list and watch:
 * - always `networks/` and `hosts/` (one record per network and per host: small at any cluster size);
 * - `endpoints/NET/` only for the networks this host uses (watchNetwork / unwatchNetwork: the agent calls them as
 *   its first endpoint on a network is attached and its last one leaves), as Docker's overlay joined a network's
 *   gossip only with its first container there. An agent thus holds, parses and indexes the endpoints of its own
 *   networks, not of the cluster: churn on a network it has no endpoint on never reaches it (docs/scale.md).
 *   With etcd every watch shares one gRPC stream.
 *
 * Per scope:
 * - load: list the prefix at revision R (paginated by the backend), apply it, then watch from R.
 * - Events are applied in order, and `apply` is called once per event batch. apply must be idempotent (it
 *   compares desired against current for each key it is given).
 * - A re-list (resync) is compared with the state key by key (ClusterState.replace): only records whose value
 *   differs are parsed and passed on, so a resync that finds nothing new costs a string compare per key, not a
 *   rebuild of every table (history.md 13). The old records stay until the new list is complete.
 * - ERR_KV_COMPACTED (or a watch the server dropped): re-list that scope.
 * - ERR_KV_UNAVAILABLE: nothing changes; the tables keep forwarding on the last known state, the backend
 *   resumes the watch when it can, and on reconnect the scope is re-listed at once (a full resync repairs
 *   anything the outage hid); the periodic check retries the list meanwhile.
 * - Every `resyncMs` (default 30 s, +-10 % so agents spread out) the reconciler checks each scope for a watch that
 *   stalled without an error: a scope whose watch delivered events since the last check is live; a quiet one is
 *   compared with the store by a count of its keys (no values read), and a difference that is still there
 *   CATCH_UP_MS later with no event in between gets the scope re-listed. A stalled watch that missed a record
 *   put or deleted is found this way; one that missed only a change of a record's value in place is repaired by
 *   the re-list that any reconnect or compaction brings.
 * - waitFor(rev, key) resolves once the scope holding `key` includes revision `rev`: read-your-writes for the
 *   agent's own changes.
 */
import type { Kv, KvError, Watch } from './kv.js';
import { Changes, ClusterState, keys } from './schema.js';

/** How long a quiet scope's watch gets to deliver what a check found different before the scope is re-listed. */
const CATCH_UP_MS = 2000;

export interface ReconcilerStatus {
  /** The newest revision applied, over every scope. */
  revision: number;
  lastFullSync: number;
  /** Lists of a scope (the first of each, and every re-list). */
  fullSyncs: number;
  /** Scopes followed now (each is one list and one watch): networks/, hosts/ and one per network used here. */
  watches: number;
  /** ms timestamp: the last time every scope was confirmed current (a list, or a check). */
  lastVerified: number;
  /** Periodic checks that found every scope current, so nothing was re-listed. */
  checksCurrent: number;
  watchErrors: number;
  reconnects: number;
  connected: boolean;
  lastError: string | null;
  invalidRecords: number;
  /** Watch batches applied, and the longest one took (ms): the state and table work each batch costs the one
   * thread the data plane also runs on. `slowBatches`: those over 10 ms. */
  batches: number;
  batchMaxMs: number;
  slowBatches: number;
}

class Scope {
  revision = 0;
  loaded = false;
  watch: Watch | null = null;
  gen = 0;
  /** Event batches applied (the check compares it before and after its wait). */
  batches = 0;
  /** `batches` at the last check. */
  checked = 0;
  loading: Promise<void> | null = null;
  waiters: { rev: number; resolve: () => void }[] = [];
  constructor(readonly prefix: string) {}
}

export class Reconciler {
  readonly state = new ClusterState();
  private readonly scopes = new Map<string, Scope>();
  private timer: NodeJS.Timeout | null = null;
  private stopped = false;
  readonly status: ReconcilerStatus = {
    revision: 0,
    lastFullSync: 0,
    fullSyncs: 0,
    watches: 0,
    lastVerified: 0,
    checksCurrent: 0,
    watchErrors: 0,
    reconnects: 0,
    connected: false,
    lastError: null,
    invalidRecords: 0,
    batches: 0,
    batchMaxMs: 0,
    slowBatches: 0,
  };

  constructor(
    private readonly kv: Kv,
    private readonly apply: (changes: Changes) => void,
    private readonly onError: (err: Error) => void,
    private readonly resyncMs = 30_000,
  ) {
    this.addScope(keys.networks);
    this.addScope(keys.hosts);
  }

  /** First lists (a failure is reported through onError and retried by the periodic check), then the timer. */
  async start(): Promise<void> {
    await this.resync();
    this.schedule();
  }

  /**
   * Follows the endpoints of `network` from now on (idempotent). Resolves when they are in the state; rejects
   * with the store's error if they cannot be read (the scope stays, and the periodic check retries it).
   */
  watchNetwork(network: string): Promise<void> {
    const s = this.scopes.get(keys.endpointsNet(network)) ?? this.addScope(keys.endpointsNet(network));
    if (s.loaded) return Promise.resolve();
    return this.load(s, true);
  }

  /** Stops following the endpoints of `network` and forgets them (they are passed to `apply` as deleted). */
  unwatchNetwork(network: string): void {
    const prefix = keys.endpointsNet(network);
    const s = this.scopes.get(prefix);
    if (!s) return;
    this.scopes.delete(prefix);
    this.status.watches = this.scopes.size;
    s.gen++;
    s.watch?.close();
    s.watch = null;
    for (const w of s.waiters) w.resolve();
    const changes = this.state.drop(prefix);
    this.status.invalidRecords = this.state.invalid;
    if (!changes.empty) this.apply(changes);
  }

  /** Whether the endpoints of `network` are followed (and listed at least once). */
  watching(network: string): boolean {
    return this.scopes.get(keys.endpointsNet(network))?.loaded ?? false;
  }

  private addScope(prefix: string): Scope {
    const s = new Scope(prefix);
    this.scopes.set(prefix, s);
    this.status.watches = this.scopes.size;
    return s;
  }

  private schedule(): void {
    if (this.stopped) return;
    const jitter = 0.9 + 0.2 * Math.random();
    this.timer = setTimeout(() => {
      void this.check().finally(() => this.schedule());
    }, this.resyncMs * jitter);
    this.timer.unref();
  }

  /** The periodic check: re-lists only the scopes whose watch is down or found behind the store. */
  private async check(): Promise<void> {
    let current = true;
    for (const s of [...this.scopes.values()]) {
      if (this.stopped) return;
      if (this.scopes.get(s.prefix) !== s) continue;
      if (!(s.loaded && this.status.connected && !s.loading && (await this.isCurrent(s)))) {
        current = false;
        await this.load(s, false).catch(() => {});
      }
    }
    if (current && !this.stopped) {
      this.status.checksCurrent++;
      this.status.lastVerified = Date.now();
    }
  }

  /** A scope is current if its watch delivered anything since the last check, or its key count is the store's. */
  private async isCurrent(s: Scope): Promise<boolean> {
    if (s.batches !== s.checked) {
      s.checked = s.batches;
      return true;
    }
    try {
      if ((await this.kv.count(s.prefix)).count === this.state.countUnder(s.prefix)) return true;
      await new Promise((r) => setTimeout(r, CATCH_UP_MS).unref());
      if (s.batches !== s.checked) {
        s.checked = s.batches;
        return true; // the watch is delivering: what the count saw was on its way
      }
      return (await this.kv.count(s.prefix)).count === this.state.countUnder(s.prefix);
    } catch {
      return false; // the re-list reports the store's state
    }
  }

  /** Re-lists and re-applies every scope; concurrent calls share one run per scope. Never throws. */
  async resync(): Promise<void> {
    await Promise.all([...this.scopes.values()].map((s) => this.load(s, false).catch(() => {})));
  }

  /** Lists one scope and watches it from there; concurrent calls share one run. Errors go to onError (and are
   * rethrown when `rethrow`). */
  private load(s: Scope, rethrow: boolean): Promise<void> {
    s.loading ??= this.listScope(s)
      .catch((e: Error) => {
        this.status.connected = false;
        this.status.lastError = e.message;
        this.onError(e);
        throw e;
      })
      .finally(() => (s.loading = null));
    return rethrow ? s.loading : s.loading.catch(() => {});
  }

  private async listScope(s: Scope): Promise<void> {
    const { entries, revision } = await this.kv.list(s.prefix);
    if (this.stopped || this.scopes.get(s.prefix) !== s) return;
    const changes = this.state.replace(entries, s.prefix);
    s.revision = Math.max(s.revision, revision);
    s.loaded = true;
    s.checked = s.batches;
    this.status.revision = Math.max(this.status.revision, revision);
    this.status.lastFullSync = Date.now();
    this.status.lastVerified = this.status.lastFullSync;
    this.status.fullSyncs++;
    this.status.connected = true;
    this.status.lastError = null;
    this.status.invalidRecords = this.state.invalid;
    if (!changes.empty) this.apply(changes);
    this.rewatch(s);
    this.wake(s);
  }

  private rewatch(s: Scope): void {
    s.watch?.close();
    // a closed watch may still report (etcd3 ends its stream with an error): only the current one counts
    const gen = ++s.gen;
    s.watch = this.kv.watch(s.prefix, s.revision, {
      events: (evs, rev) => {
        if (gen !== s.gen) return;
        const t0 = performance.now();
        const changes = new Changes();
        for (const ev of evs) {
          if (ev.modRevision <= s.revision) continue; // already in the state (a list raced the watch)
          this.state.apply(ev.key, ev.value, changes);
        }
        s.revision = Math.max(s.revision, rev);
        s.batches++;
        this.status.revision = Math.max(this.status.revision, s.revision);
        this.status.connected = true;
        this.status.invalidRecords = this.state.invalid;
        if (!changes.empty) this.apply(changes);
        this.wake(s);
        const ms = performance.now() - t0;
        this.status.batches++;
        if (ms > this.status.batchMaxMs) this.status.batchMaxMs = Math.round(ms * 100) / 100;
        if (ms > 10) this.status.slowBatches++;
      },
      error: (err: KvError) => {
        if (gen !== s.gen) return;
        this.status.watchErrors++;
        this.status.lastError = err.message;
        if (err.code === 'ERR_KV_COMPACTED') {
          void this.load(s, false);
        } else {
          this.status.connected = false;
        }
        this.onError(err);
      },
      reconnected: () => {
        if (gen !== s.gen) return;
        this.status.reconnects++;
        void this.load(s, false);
      },
    });
  }

  /**
   * Resolves when the scope holding `key` (default: the network records) has caught up with `rev`, or after
   * timeoutMs (then the caller may re-list), or at once if that scope is not followed.
   */
  waitFor(rev: number, timeoutMs = 5000, key: string = keys.networks): Promise<void> {
    let s: Scope | undefined;
    for (const x of this.scopes.values()) if (key.startsWith(x.prefix)) s = x;
    if (!s || s.revision >= rev) return Promise.resolve();
    const scope = s;
    return new Promise((resolve) => {
      const w = { rev, resolve };
      scope.waiters.push(w);
      setTimeout(() => {
        scope.waiters = scope.waiters.filter((x) => x !== w);
        resolve();
      }, timeoutMs).unref();
    });
  }

  private wake(s: Scope): void {
    if (!s.waiters.length) return;
    const ready = s.waiters.filter((w) => w.rev <= s.revision);
    s.waiters = s.waiters.filter((w) => w.rev > s.revision);
    for (const w of ready) w.resolve();
  }

  /** The newest revision applied, over every scope. */
  get currentRevision(): number {
    return this.status.revision;
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    for (const s of this.scopes.values()) {
      s.gen++;
      s.watch?.close();
      s.watch = null;
      for (const w of s.waiters) w.resolve();
      s.waiters = [];
    }
  }
}
