/**
 * The embedded store: one SQLite file in WAL mode that every agent on this machine opens. SQLite's locking makes
 * each write transaction atomic across processes; the etcd-like semantics are built on four tables:
 *
 *   meta(name, value)                      'revision' (last write), 'compacted' (events up to it are trimmed),
 *                                          'lease_seq' (lease ids)
 *   kv(key, value, create_rev, mod_rev, lease)
 *   events(rev, key, type, value)          one row per change, the log watchers read
 *   leases(id, ttl_ms, expires_at)         wall-clock deadline in ms (one machine, one clock)
 *
 * Watchers read the events table for rows past their revision (an indexed range read) on every poll. A poll runs
 * as soon as the WAL file changes (inotify through fs.watch: every commit, by any agent, appends to it), so an
 * endpoint created by one agent reaches the others in about a millisecond; and every `pollMs` (default 100 ms)
 * in any case, which is the bound where file change events are not delivered (some network and overlay file
 * systems), and at the earliest lease deadline. A poll first asks SQLite
 * whether anything was committed since the last one (PRAGMA data_version, one statement; commits through this
 * connection are noted in write()) and whether a lease may have expired (the earliest deadline is remembered);
 * only then does it run the watchers' reads, about a dozen statements each taking the file locks. The agent
 * shares its thread with the data plane, so an idle store costs it one statement per poll, not twelve.
 * Lease expiry is enforced by every open store on the same timer: whoever sees an expired lease first deletes it
 * and its keys in one transaction (the others then see the delete events like any other change).
 * The events log is trimmed to the last `keepEvents` revisions; a watcher that falls further behind gets
 * ERR_KV_COMPACTED and re-lists.
 *
 * better-sqlite3 is synchronous: every call runs on the caller's thread. Transactions are a few row writes, and
 * busy waits are bounded by busy_timeout, so the data plane sharing the thread sees sub-millisecond stalls.
 */
import Database from 'better-sqlite3';
import { closeSync, type FSWatcher, mkdirSync, openSync, statSync, watch } from 'node:fs';
import { dirname } from 'node:path';
import {
  type Compare,
  type Kv,
  type KvEntry,
  KvError,
  type Lease,
  type Op,
  prefixEnd,
  type TxnResult,
  type Watch,
  type WatchHandler,
} from './kv.js';

export interface EmbeddedOptions {
  pollMs?: number;
  keepEvents?: number;
  now?: () => number;
}

/** How often the store file's identity is checked (a stat). */
const FILE_CHECK_MS = 1000;

/** device:inode of the file at `path`, or null if there is none. */
function fileIdentity(path: string): string | null {
  try {
    const st = statSync(path);
    return `${st.dev}:${st.ino}`;
  } catch {
    return null;
  }
}

/** After a WAL change event: a second poll this much later (see wake). */
const RECHECK_MS = 3;

type Row = { key: string; value: string; create_rev: number; mod_rev: number; lease: number | null };

export class EmbeddedKv implements Kv {
  readonly confidential = true;
  readonly kind = 'embedded' as const;
  readonly where: string;
  private readonly db: Database.Database;
  private readonly pollMs: number;
  private readonly keepEvents: number;
  private readonly now: () => number;
  private readonly watchers = new Set<{ prefix: string; end: string; rev: number; h: WatchHandler }>();
  private readonly leases = new Map<string, EmbeddedLease>();
  private timer: NodeJS.Timeout | null = null;
  /** Change events of the WAL file (null: none, polling only), and whether a poll for them is already queued. */
  private fileWatch: FSWatcher | null = null;
  private wakeQueued = false;
  private closed = false;
  /** What the last full poll saw: PRAGMA data_version, and the earliest lease deadline (ms). */
  private seenDataVersion = -1;
  private nextExpiry = -Infinity;
  /** This connection committed since the last full poll (data_version only counts other connections). */
  private dirty = true;
  private readonly q: Record<string, Database.Statement>;
  /** The store file's identity when it was opened: a file deleted or replaced under the open connection means this
   * agent would go on alone on the old one while the others open the new one (a split cluster). */
  private readonly fileId: string;
  private lastIdCheck = 0;
  private fatal: KvError | null = null;
  private fatalHandlers: ((err: KvError) => void)[] = [];

  constructor(path: string, opts: EmbeddedOptions = {}) {
    this.where = path;
    this.pollMs = opts.pollMs ?? 100;
    this.keepEvents = opts.keepEvents ?? 10_000;
    this.now = opts.now ?? Date.now;
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    // a new store is readable by root only (it will hold the cluster's records, and network keys): made 0600
    // before SQLite opens it, whose WAL and shared-memory files then take the same mode
    try {
      closeSync(openSync(path, 'wx', 0o600));
    } catch {
      // it exists (its mode is the operator's), or the open below reports why not
    }
    try {
      this.db = new Database(path, { timeout: 5000 });
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = NORMAL');
      this.db.exec(`
        CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT OR IGNORE INTO meta VALUES ('revision', 1), ('compacted', 0), ('lease_seq', 0);
        CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL, lease INTEGER);
        CREATE INDEX IF NOT EXISTS kv_lease ON kv(lease) WHERE lease IS NOT NULL;
        CREATE TABLE IF NOT EXISTS events (rev INTEGER PRIMARY KEY, key TEXT NOT NULL, type TEXT NOT NULL, value TEXT);
        CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY, ttl_ms INTEGER NOT NULL, expires_at INTEGER NOT NULL);
      `);
    } catch (e) {
      throw new KvError('ERR_KV_UNAVAILABLE', `cannot open the embedded store ${path}: ${(e as Error).message}`, {
        cause: e,
      });
    }
    const p = (sql: string) => this.db.prepare(sql);
    this.q = {
      rev: p(`SELECT value FROM meta WHERE name = 'revision'`),
      compacted: p(`SELECT value FROM meta WHERE name = 'compacted'`),
      setRev: p(`UPDATE meta SET value = ? WHERE name = 'revision'`),
      setCompacted: p(`UPDATE meta SET value = ? WHERE name = 'compacted'`),
      leaseSeq: p(`UPDATE meta SET value = value + 1 WHERE name = 'lease_seq' RETURNING value`),
      get: p(`SELECT * FROM kv WHERE key = ?`),
      range: p(`SELECT * FROM kv WHERE key >= ? AND key < ? ORDER BY key`),
      count: p(`SELECT COUNT(*) AS n FROM kv WHERE key >= ? AND key < ?`),
      upsert: p(`INSERT INTO kv (key, value, create_rev, mod_rev, lease) VALUES (@key, @value, @rev, @rev, @lease)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value, mod_rev = excluded.mod_rev, lease = excluded.lease`),
      del: p(`DELETE FROM kv WHERE key = ?`),
      event: p(`INSERT INTO events (rev, key, type, value) VALUES (?, ?, ?, ?)`),
      eventsAfter: p(
        `SELECT rev, key, type, value FROM events WHERE rev > ? AND rev <= ? AND key >= ? AND key < ? ORDER BY rev LIMIT 10000`,
      ),
      trim: p(`DELETE FROM events WHERE rev <= ?`),
      leaseGet: p(`SELECT * FROM leases WHERE id = ?`),
      leaseAdd: p(`INSERT INTO leases (id, ttl_ms, expires_at) VALUES (?, ?, ?)`),
      leaseRenew: p(`UPDATE leases SET expires_at = ? WHERE id = ?`),
      leaseDel: p(`DELETE FROM leases WHERE id = ?`),
      leaseKeys: p(`SELECT key FROM kv WHERE lease = ?`),
      expired: p(`SELECT id FROM leases WHERE expires_at <= ?`),
      firstExpiry: p(`SELECT MIN(expires_at) AS at FROM leases`),
      dataVersion: p(`PRAGMA data_version`).pluck(),
    };
    this.fileId = fileIdentity(path) ?? '';
    this.watchFile(`${path}-wal`);
    this.schedule(false);
  }

  onFatal(cb: (err: KvError) => void): void {
    this.fatalHandlers.push(cb);
    if (this.fatal) cb(this.fatal);
  }

  /** At most once a second: is the file at our path still the one we opened? If not, the store is lost for good. */
  private checkFile(): void {
    const now = Date.now();
    if (this.fatal || now - this.lastIdCheck < FILE_CHECK_MS) return;
    this.lastIdCheck = now;
    const id = fileIdentity(this.where);
    if (id === this.fileId) return;
    this.fatal = new KvError(
      'ERR_KV_FATAL',
      `the embedded store ${this.where} was ${id === null ? 'deleted' : 'replaced by another file'} while in use; ` +
        'every agent on this machine must be restarted to open the same store (endpoints survive the restart)',
    );
    for (const cb of this.fatalHandlers) cb(this.fatal);
  }

  /** Polls when the WAL file changes; without file change events, the timer alone does (see the top). */
  private watchFile(walPath: string): void {
    try {
      this.fileWatch = watch(walPath, { persistent: false }, () => this.wake());
      this.fileWatch.on('error', () => {
        this.fileWatch?.close();
        this.fileWatch = null;
      });
    } catch {
      this.fileWatch = null;
    }
  }

  /**
   * One poll for any number of change events that arrive before it runs, and one more RECHECK_MS later: a writer
   * appends to the WAL (the event) before it publishes the commit in the shared-memory index (no event), so the
   * first poll can come too early and find nothing; without the second, that change would wait for the timer.
   */
  private wake(): void {
    if (this.wakeQueued || this.closed) return;
    this.wakeQueued = true;
    setImmediate(() => {
      this.wakeQueued = false;
      if (this.closed) return;
      if (this.timer) clearTimeout(this.timer);
      this.tick(true);
    });
  }

  private revision(): number {
    return (this.q.rev.get() as { value: number }).value;
  }

  /**
   * Runs fn in one IMMEDIATE transaction. fn gets the first free revision and returns the last revision it used
   * (first - 1 when it changed nothing): every changed key gets a revision of its own, so the events log stays
   * one row per revision and a watcher's position is a plain number.
   */
  private write<T>(fn: (first: number) => { last: number; out: T }): T {
    this.check();
    try {
      return this.db
        .transaction(() => {
          const first = this.revision() + 1;
          this.dirty = true;
          const r = fn(first);
          if (r.last >= first) this.q.setRev.run(r.last);
          return r.out;
        })
        .immediate();
    } catch (e) {
      if (e instanceof KvError) throw e;
      throw new KvError('ERR_KV_UNAVAILABLE', `embedded store ${this.where}: ${(e as Error).message}`, { cause: e });
    }
  }

  private check(): void {
    if (this.closed) throw new KvError('ERR_KV_UNAVAILABLE', `embedded store ${this.where} is closed`);
  }

  /** Applies one op at revisions after `rev`; returns the last revision used. */
  private applyOp(op: Op, rev: number): number {
    if (op.type === 'put') {
      const lease = op.lease === undefined ? null : Number(op.lease);
      if (lease !== null && !this.q.leaseGet.get(lease))
        throw new KvError('ERR_KV_LEASE_LOST', `lease ${op.lease} does not exist (expired?)`);
      rev++;
      this.q.upsert.run({ key: op.key, value: op.value, rev, lease });
      this.q.event.run(rev, op.key, 'put', op.value);
      return rev;
    }
    const keys =
      op.type === 'delete'
        ? this.q.get.get(op.key)
          ? [op.key]
          : []
        : (this.q.range.all(op.prefix, prefixEnd(op.prefix)) as Row[]).map((r) => r.key);
    for (const k of keys) rev = this.delKey(k, rev);
    return rev;
  }

  /** Deletes one key at the revision after `rev`; returns it. */
  private delKey(key: string, rev: number): number {
    rev++;
    this.q.del.run(key);
    this.q.event.run(rev, key, 'delete', null);
    return rev;
  }

  async get(key: string): Promise<KvEntry | null> {
    this.check();
    const r = this.q.get.get(key) as Row | undefined;
    return r ? toEntry(r) : null;
  }

  async list(prefix: string): Promise<{ entries: KvEntry[]; revision: number }> {
    this.check();
    const read = this.db.transaction(() => ({
      rows: this.q.range.all(prefix, prefixEnd(prefix)) as Row[],
      revision: this.revision(),
    }));
    const { rows, revision } = read.deferred();
    return { entries: rows.map(toEntry), revision };
  }

  async count(prefix: string): Promise<{ count: number; revision: number }> {
    this.check();
    const read = this.db.transaction(() => ({
      count: (this.q.count.get(prefix, prefixEnd(prefix)) as { n: number }).n,
      revision: this.revision(),
    }));
    return read.deferred();
  }

  async put(key: string, value: string, lease?: string): Promise<number> {
    return (await this.txn([], [{ type: 'put', key, value, lease }])).revision;
  }

  async delete(key: string): Promise<boolean> {
    const before = await this.get(key);
    if (!before) return false;
    const r = await this.txn([{ key, modRevision: before.modRevision }], [{ type: 'delete', key }]);
    return r.succeeded || (await this.delete(key));
  }

  async txn(compares: Compare[], success: Op[], failure: Op[] = []): Promise<TxnResult> {
    return this.txnSync(compares, success, failure);
  }

  private txnSync(compares: Compare[], success: Op[], failure: Op[]): TxnResult {
    return this.write((first) => {
      const ok = compares.every((c) => {
        const r = this.q.get.get(c.key) as Row | undefined;
        return c.modRevision === 0 ? !r : r?.mod_rev === c.modRevision;
      });
      let rev = first - 1;
      for (const op of ok ? success : failure) rev = this.applyOp(op, rev);
      return { last: rev, out: { succeeded: ok, revision: rev >= first ? rev : first - 1 } };
    });
  }

  async grantLease(ttlSec: number): Promise<Lease> {
    if (!(ttlSec >= 1)) throw new KvError('ERR_KV_INVALID', `lease TTL must be at least 1 s, got ${ttlSec}`);
    const ttlMs = Math.round(ttlSec * 1000);
    const id = this.write((first) => {
      const id = (this.q.leaseSeq.get() as { value: number }).value; // shared counter: unique across processes
      this.q.leaseAdd.run(id, ttlMs, this.now() + ttlMs);
      return { last: first - 1, out: String(id) };
    });
    const lease = new EmbeddedLease(this, id, ttlSec);
    this.leases.set(id, lease);
    return lease;
  }

  /** @internal keep-alive for one lease; false when it no longer exists. */
  renew(id: string, ttlSec: number): boolean {
    if (this.closed) return false;
    return this.write((first) => ({
      last: first - 1,
      out: this.q.leaseRenew.run(this.now() + ttlSec * 1000, Number(id)).changes > 0,
    }));
  }

  /** @internal */
  revokeLease(id: string): void {
    this.leases.delete(id);
    this.write((first) => ({ last: this.dropLease(Number(id), first - 1), out: undefined }));
  }

  /** Deletes a lease and its keys at revisions after `rev`; returns the last revision used. */
  private dropLease(id: number, rev: number): number {
    for (const { key } of this.q.leaseKeys.all(id) as { key: string }[]) rev = this.delKey(key, rev);
    this.q.leaseDel.run(id);
    return rev;
  }

  private expire(): void {
    const now = this.now();
    const expired = this.q.expired.all(now) as { id: number }[];
    if (!expired.length) return;
    this.write((first) => {
      let rev = first - 1;
      for (const { id } of this.q.expired.all(now) as { id: number }[]) rev = this.dropLease(id, rev);
      return { last: rev, out: undefined };
    });
    for (const { id } of expired) {
      const l = this.leases.get(String(id));
      if (l) {
        this.leases.delete(String(id));
        l.lost(new KvError('ERR_KV_LEASE_LOST', `lease ${id} expired`));
      }
    }
  }

  watch(prefix: string, fromRevision: number, h: WatchHandler): Watch {
    this.check();
    const w = { prefix, end: prefixEnd(prefix), rev: fromRevision, h };
    this.watchers.add(w);
    queueMicrotask(() => this.pollOne(w));
    return { close: () => this.watchers.delete(w) };
  }

  private pollOne(w: { prefix: string; end: string; rev: number; h: WatchHandler }): void {
    if (!this.watchers.has(w) || this.closed) return;
    const compacted = (this.q.compacted.get() as { value: number }).value;
    if (w.rev < compacted) {
      this.watchers.delete(w);
      w.h.error(new KvError('ERR_KV_COMPACTED', `watch from revision ${w.rev}: compacted up to ${compacted}; re-list`));
      return;
    }
    // head first, then events up to it: a write committed by another process in between is read next time
    const head = this.revision();
    const rows = this.q.eventsAfter.all(w.rev, head, w.prefix, w.end) as {
      rev: number;
      key: string;
      type: 'put' | 'delete';
      value: string | null;
    }[];
    if (rows.length) {
      const last = rows[rows.length - 1].rev;
      w.rev = rows.length === 10000 ? last : head;
      w.h.events(
        rows.map((r) => ({ type: r.type, key: r.key, value: r.value, modRevision: r.rev })),
        w.rev,
      );
    } else if (head > w.rev) {
      w.rev = head; // changes outside the prefix: move along so compaction does not overtake an idle watcher
    }
  }

  /** The next poll: RECHECK_MS away after a change event (see wake), else pollMs or the earliest lease deadline. */
  private schedule(recheck: boolean): void {
    // no later than the earliest lease deadline: an expired lease commits nothing that would wake us
    // a deadline already past (it passed during the poll, or the poll failed: dirty) is looked at again soon, not
    // after a whole pollMs; after a failure not at once either, so a store that keeps failing is not hammered
    const untilExpiry = this.nextExpiry - this.now();
    const pastDue = this.dirty ? Math.min(this.pollMs, 50) : 1;
    const delay = recheck
      ? RECHECK_MS
      : untilExpiry < this.pollMs
        ? untilExpiry > 0
          ? Math.ceil(untilExpiry)
          : pastDue
        : this.pollMs;
    this.timer = setTimeout(() => this.tick(), delay);
    this.timer.unref();
  }

  private tick(recheck = false): void {
    if (this.closed) return;
    this.checkFile();
    if (this.fatal) return; // no more polls: the agent stops
    try {
      // nothing committed anywhere and no lease due: the watchers' reads would find nothing
      const dv = this.q.dataVersion.get() as number;
      if (dv === this.seenDataVersion && !this.dirty && this.now() < this.nextExpiry) {
        this.schedule(recheck);
        return;
      }
      this.seenDataVersion = dv;
      this.dirty = false;
      this.expire();
      for (const w of [...this.watchers]) this.pollOne(w);
      const head = this.revision();
      const compacted = (this.q.compacted.get() as { value: number }).value;
      if (head - compacted > this.keepEvents * 2) {
        this.compact(head - this.keepEvents);
      }
      this.nextExpiry = (this.q.firstExpiry.get() as { at: number | null }).at ?? Infinity;
    } catch (e) {
      this.dirty = true; // look again next time
      for (const w of this.watchers)
        w.h.error(e instanceof KvError ? e : new KvError('ERR_KV_UNAVAILABLE', (e as Error).message));
    }
    this.schedule(recheck);
  }

  /** For tests: compact the event log up to `rev` now. */
  compact(rev: number): void {
    this.write((first) => {
      this.q.trim.run(rev);
      this.q.setCompacted.run(rev);
      return { last: first - 1, out: undefined };
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    for (const l of this.leases.values()) l.release();
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.fileWatch?.close();
    this.watchers.clear();
    this.db.close();
  }
}

class EmbeddedLease implements Lease {
  private cbs: ((e: KvError) => void)[] = [];
  private timer: NodeJS.Timeout | null;
  private done = false;
  constructor(
    private readonly kv: EmbeddedKv,
    readonly id: string,
    readonly ttlSec: number,
  ) {
    this.timer = setInterval(() => this.keepAlive(), Math.max(200, (ttlSec * 1000) / 3));
    this.timer.unref();
  }
  private keepAlive(): void {
    try {
      if (!this.kv.renew(this.id, this.ttlSec))
        this.lost(new KvError('ERR_KV_LEASE_LOST', `lease ${this.id} no longer exists`));
    } catch {
      /* transient (busy): the next keep-alive retries well before the TTL runs out */
    }
  }
  lost(e: KvError): void {
    if (this.done) return;
    this.release();
    for (const cb of this.cbs) cb(e);
  }
  onLost(cb: (err: KvError) => void): void {
    this.cbs.push(cb);
  }
  async revoke(): Promise<void> {
    this.release();
    this.kv.revokeLease(this.id);
  }
  release(): void {
    this.done = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }
}

function toEntry(r: Row): KvEntry {
  return {
    key: r.key,
    value: r.value,
    createRevision: r.create_rev,
    modRevision: r.mod_rev,
    lease: r.lease === null ? null : String(r.lease),
  };
}
