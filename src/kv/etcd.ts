/**
 * The etcd backend, through the maintained etcd3 client (gRPC). Several endpoints may be given for a cluster;
 * the client fails over between them. Watches resume by themselves after a disconnect from the last revision
 * they delivered (etcd3 does that); a compacted revision surfaces as ERR_KV_COMPACTED so the reconciler re-lists.
 */
import { connect as tlsConnect } from 'node:tls';
import { Worker } from 'node:worker_threads';
import { Etcd3, EtcdLeaseInvalidError, type Lease as EtcdLease, type Watcher } from 'etcd3';
import {
  type Compare,
  type Kv,
  type KvEntry,
  KvError,
  type KvEvent,
  type Lease,
  type Op,
  type TxnResult,
  type KvErrorCode,
  type Watch,
  type WatchHandler,
} from './kv.js';

/** Main thread -> watch thread. */
export type WatchRequest =
  { op: 'watch'; id: number; prefix: string; fromRevision: number } | { op: 'close'; id: number };
/** Watch thread -> main thread. */
export type WatchReport =
  | { id: number; kind: 'events'; events: KvEvent[]; revision: number }
  | { id: number; kind: 'error'; code: KvErrorCode; message: string }
  | { id: number; kind: 'reconnected' };

export interface EtcdOptions {
  /** e.g. ['127.0.0.1:2379'] (http:// is assumed). */
  endpoints: string[];
  /** Per-call deadline (default 3000 ms), so a dead etcd fails fast instead of hanging the caller. */
  timeoutMs?: number;
  /** Keys per range request when listing (default LIST_PAGE). */
  pageSize?: number;
  /** TLS: the CA that signed etcd's certificate, and a client certificate and key if etcd asks for one. */
  tls?: { ca: Buffer; cert?: Buffer; key?: Buffer };
  /** etcd's user/password authentication. */
  auth?: { username: string; password: string };
}

/**
 * Keys per page of a list: endpoint records are about 150 bytes with their key, so a page is about 1.5 MB, well
 * inside gRPC's 4 MiB default message limit, and few enough round trips that 250,000 endpoints take 25.
 */
export const LIST_PAGE = 10_000;

/** What it takes to make an etcd client: plain data, so the watch thread can be given it. */
export interface ClientSpec {
  hosts: string[];
  timeoutMs: number;
  /** Buffers, or the plain Uint8Arrays they become when the spec is handed to a worker thread (structured clone). */
  tls?: { ca: Uint8Array; cert?: Uint8Array; key?: Uint8Array };
  auth?: EtcdOptions['auth'];
}

/** gRPC and TLS take only Buffers: the same bytes, viewed as one. */
function buf(b: Uint8Array): Buffer;
function buf(b: Uint8Array | undefined): Buffer | undefined;
function buf(b: Uint8Array | undefined): Buffer | undefined {
  return b && (Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

export function etcdClient(c: ClientSpec): Etcd3 {
  return new Etcd3({
    hosts: c.hosts,
    dialTimeout: c.timeoutMs,
    // unary calls only: a deadline on a stream (watch, lease keep-alive) would end it every timeoutMs
    defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: new Date(Date.now() + c.timeoutMs) }),
    ...(c.tls
      ? { credentials: { rootCertificate: buf(c.tls.ca), certChain: buf(c.tls.cert), privateKey: buf(c.tls.key) } }
      : {}),
    ...(c.auth ? { auth: c.auth } : {}),
  });
}

function wrap(e: unknown, what: string): KvError {
  if (e instanceof KvError) return e;
  const msg = (e as Error)?.message ?? String(e);
  if (/compacted/i.test(msg)) return new KvError('ERR_KV_COMPACTED', `${what}: ${msg}`, { cause: e });
  if (e instanceof EtcdLeaseInvalidError || /lease not found|requested lease not found/i.test(msg))
    return new KvError('ERR_KV_LEASE_LOST', `${what}: ${msg}`, { cause: e });
  if (/authentication failed|invalid auth token|user name|permission denied|UNAUTHENTICATED/i.test(msg))
    return new KvError('ERR_KV_AUTH', `${what}: etcd refused the user or password: ${msg}`, { cause: e });
  if (/certificate|SSL|TLS|handshake/i.test(msg))
    return new KvError('ERR_KV_AUTH', `${what}: TLS with etcd failed: ${msg}`, { cause: e });
  return new KvError('ERR_KV_UNAVAILABLE', `${what}: ${msg}`, { cause: e });
}

export class EtcdKv implements Kv {
  readonly kind = 'etcd' as const;
  readonly confidential: boolean;
  readonly where: string;
  private readonly client: Etcd3;
  private readonly leases = new Set<EtcdLease>();
  private readonly pageSize: number;
  private readonly endpoints: string[];
  /** Range requests list() has made (pages read): the tests count them. */
  pages = 0;
  /** How to make a client like this one (the watch thread makes its own). */
  private readonly spec: ClientSpec;
  /** The thread that runs the watches (made at the first watch), and the handlers of its watches by id. */
  private watchThread: Worker | null = null;
  private readonly watchHandlers = new Map<number, WatchHandler>();
  private watchSeq = 0;
  private closing = false;

  constructor(o: EtcdOptions) {
    if (!o.endpoints.length) throw new KvError('ERR_KV_INVALID', 'etcd: no endpoints given');
    this.endpoints = o.endpoints;
    this.confidential = o.tls !== undefined;
    const scheme = o.tls ? 'https' : 'http';
    const hosts = o.endpoints.map((h) => (/^https?:\/\//.test(h) ? h : `${scheme}://${h}`));
    this.where = `etcd://${o.endpoints.join(',')}${o.tls ? ' (TLS)' : ''}`;
    this.pageSize = o.pageSize ?? LIST_PAGE;
    this.spec = { hosts, timeoutMs: o.timeoutMs ?? 3000, tls: o.tls, auth: o.auth };
    this.client = etcdClient(this.spec);
    this.thread(); // now: it loads its own etcd client while this thread does the rest of the start-up
  }

  /** Tries a TLS handshake with each endpoint as the client would: the first refusal's reason, or null. */
  async diagnose(): Promise<string | null> {
    const t = this.spec.tls;
    if (!t) return null;
    for (const ep of this.endpoints) {
      const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(ep);
      if (!m) continue;
      const reason = await new Promise<string | null>((resolve) => {
        const s = tlsConnect({
          host: m[1] ?? m[2],
          port: Number(m[3]),
          ca: buf(t.ca),
          cert: buf(t.cert),
          key: buf(t.key),
          ALPNProtocols: ['h2'],
        });
        const done = (r: string | null) => (s.destroy(), resolve(r));
        s.setTimeout(this.spec.timeoutMs, () => done(null));
        s.once('secureConnect', () => done(null));
        s.once('error', (e: NodeJS.ErrnoException) =>
          done(e.code === 'ECONNREFUSED' || e.code === 'EHOSTUNREACH' ? null : `${ep}: ${e.message}`),
        );
      });
      if (reason) return reason;
    }
    return null;
  }

  async get(key: string): Promise<KvEntry | null> {
    try {
      const r = await this.client.get(key).exec();
      return r.kvs.length ? toEntry(r.kvs[0]) : null;
    } catch (e) {
      throw wrap(e, `etcd get ${key}`);
    }
  }

  /**
   * Every key under `prefix` as of one revision, read in pages of `pageSize` keys: one range over a large
   * cluster passes gRPC's 4 MiB message limit (about 33,000 endpoint records) and fails whole. The first page
   * fixes the revision; the others are read at that revision, from just past the last key of the page before,
   * so the result is one consistent snapshot however many pages it takes. If the store compacts that revision
   * away between pages, the list starts over at the current one (a few times, then ERR_KV_COMPACTED).
   */
  async list(prefix: string): Promise<{ entries: KvEntry[]; revision: number }> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.listOnce(prefix);
      } catch (e) {
        const err = wrap(e, `etcd list ${prefix}`);
        if (err.code !== 'ERR_KV_COMPACTED' || attempt >= 3) throw err;
      }
    }
  }

  private async listOnce(prefix: string): Promise<{ entries: KvEntry[]; revision: number }> {
    const end = prefixEndBytes(prefix);
    const entries: KvEntry[] = [];
    let from = Buffer.from(prefix);
    let revision = 0;
    for (;;) {
      const r = await this.client.kv.range({ key: from, range_end: end, limit: this.pageSize, revision });
      if (revision === 0) revision = Number(r.header.revision);
      for (const kv of r.kvs) entries.push(toEntry(kv));
      this.pages++;
      if (!r.more || r.kvs.length === 0) return { entries, revision };
      from = Buffer.concat([r.kvs[r.kvs.length - 1].key, Buffer.from([0])]);
    }
  }

  async count(prefix: string): Promise<{ count: number; revision: number }> {
    try {
      const r = await this.client.kv.range({
        key: Buffer.from(prefix),
        range_end: prefixEndBytes(prefix),
        count_only: true,
      });
      return { count: Number(r.count), revision: Number(r.header.revision) };
    } catch (e) {
      throw wrap(e, `etcd count ${prefix}`);
    }
  }

  async put(key: string, value: string, lease?: string): Promise<number> {
    return (await this.txn([], [{ type: 'put', key, value, lease }])).revision;
  }

  async delete(key: string): Promise<boolean> {
    try {
      const r = await this.client.delete().key(key).exec();
      return Number(r.deleted) > 0;
    } catch (e) {
      throw wrap(e, `etcd delete ${key}`);
    }
  }

  async txn(compares: Compare[], success: Op[], failure: Op[] = []): Promise<TxnResult> {
    const toOp = (op: Op) => {
      if (op.type === 'put')
        return { request_put: { key: Buffer.from(op.key), value: Buffer.from(op.value), lease: op.lease ?? 0 } };
      if (op.type === 'delete') return { request_delete_range: { key: Buffer.from(op.key) } };
      return {
        request_delete_range: { key: Buffer.from(op.prefix), range_end: Buffer.from(prefixEndBytes(op.prefix)) },
      };
    };
    try {
      const r = await this.client.kv.txn({
        compare: compares.map((c) => ({
          key: Buffer.from(c.key),
          target: 'Mod',
          result: 'Equal',
          mod_revision: c.modRevision,
        })),
        success: success.map(toOp),
        failure: failure.map(toOp),
      } as never);
      return { succeeded: r.succeeded, revision: Number(r.header.revision) };
    } catch (e) {
      throw wrap(e, 'etcd txn');
    }
  }

  async grantLease(ttlSec: number): Promise<Lease> {
    if (!(ttlSec >= 1)) throw new KvError('ERR_KV_INVALID', `lease TTL must be at least 1 s, got ${ttlSec}`);
    const l = this.client.lease(Math.round(ttlSec), { autoKeepAlive: true });
    this.leases.add(l);
    let id: string;
    try {
      id = await l.grant();
    } catch (e) {
      this.leases.delete(l);
      l.release();
      throw wrap(e, 'etcd lease grant');
    }
    return {
      id,
      ttlSec,
      onLost: (cb) => l.on('lost', (err: Error) => cb(wrap(err, `etcd lease ${id} lost`))),
      revoke: async () => {
        this.leases.delete(l);
        try {
          await l.revoke();
        } catch (e) {
          throw wrap(e, `etcd lease ${id} revoke`);
        }
      },
      release: () => {
        this.leases.delete(l);
        l.release();
      },
    };
  }

  /**
   * Watches run on their own thread (src/kv/etcdwatch.ts, one for all of this store's watches): the gRPC stream,
   * its protobuf decoding and the etcd client's per-event work happen there, and this thread gets the events as
   * plain arrays, several changes per message under churn. This thread runs the data plane: what it no longer
   * does for a watch is time it can forward (bench/control-plane-scale.ts measures the difference).
   */
  watch(prefix: string, fromRevision: number, h: WatchHandler): Watch {
    const id = ++this.watchSeq;
    this.watchHandlers.set(id, h);
    this.thread().postMessage({ op: 'watch', id, prefix, fromRevision } satisfies WatchRequest);
    return {
      close: () => {
        if (this.watchHandlers.delete(id)) this.watchThread?.postMessage({ op: 'close', id } satisfies WatchRequest);
      },
    };
  }

  private thread(): Worker {
    if (this.watchThread) return this.watchThread;
    const w = new Worker(new URL('./etcdwatch.js', import.meta.url), { workerData: this.spec });
    w.unref(); // the agent's own handles keep it running, never this thread alone
    w.on('message', (m: WatchReport) => {
      const h = this.watchHandlers.get(m.id);
      if (!h) return; // closed meanwhile
      if (m.kind === 'events') h.events(m.events, m.revision);
      else if (m.kind === 'error') h.error(new KvError(m.code, m.message));
      else h.reconnected?.();
    });
    const born = performance.now();
    const lost = (why: string): void => {
      if (this.watchThread !== w) return;
      this.watchThread = null;
      if (this.closing) return;
      // every watch ended with it: their owners re-list and watch again (on a new thread); a thread that died
      // young may die again the same way, so that comes a second later, not in a tight loop
      const hs = [...this.watchHandlers.values()];
      this.watchHandlers.clear();
      const tell = () => {
        if (!this.closing)
          for (const h of hs) h.error(new KvError('ERR_KV_COMPACTED', `etcd watch thread ${why}: re-list`));
      };
      if (performance.now() - born < 1000) setTimeout(tell, 1000).unref();
      else tell();
    };
    w.on('error', (e) => lost(`failed: ${e.message}`));
    w.on('exit', (code) => lost(`exited (${code})`));
    this.watchThread = w;
    return w;
  }

  async close(): Promise<void> {
    this.closing = true;
    this.watchHandlers.clear();
    await this.watchThread?.terminate();
    for (const l of this.leases) l.release();
    this.client.close();
  }
}

function prefixEndBytes(prefix: string): Buffer {
  const b = Buffer.from(prefix);
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i] < 0xff) {
      b[i]++;
      return b.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

function toEntry(kv: {
  key: Buffer;
  value: Buffer;
  create_revision: string;
  mod_revision: string;
  lease: string;
}): KvEntry {
  return {
    key: kv.key.toString(),
    value: kv.value.toString(),
    createRevision: Number(kv.create_revision),
    modRevision: Number(kv.mod_revision),
    lease: kv.lease && kv.lease !== '0' ? kv.lease : null,
  };
}

/**
 * One etcd watch on `client`, reported to `h` as the Kv interface says (src/kv/etcdwatch.ts runs these on the
 * watch thread).
 */
export function watchOn(client: Etcd3, prefix: string, fromRevision: number, h: WatchHandler): Watch {
  let w: Watcher | null = null;
  let closed = false;
  client
    .watch()
    .prefix(prefix)
    .startRevision(String(fromRevision + 1))
    .create()
    .then((watcher) => {
      if (closed) {
        void watcher.cancel();
        return;
      }
      w = watcher;
      watcher.on('data', (res) => {
        if (closed) return;
        const evs: KvEvent[] = (res.events ?? []).map((ev) => ({
          type: ev.type === 'Delete' ? 'delete' : 'put',
          key: ev.kv.key.toString(),
          value: ev.type === 'Delete' ? null : ev.kv.value.toString(),
          modRevision: Number(ev.kv.mod_revision),
        }));
        // the position is the last event's revision, NOT res.header.revision: the header may be ahead of the
        // events in this response, and the reconciler skips anything at or below its position as seen
        if (evs.length) h.events(evs, evs[evs.length - 1].modRevision);
      });
      let lost = false;
      watcher.on('disconnected', (err) => {
        if (closed) return;
        lost = true;
        h.error(wrap(err, 'etcd watch disconnected'));
      });
      watcher.on('connected', () => {
        if (closed || !lost) return;
        lost = false;
        h.reconnected?.();
      });
      watcher.on('error', (err) => {
        if (closed) return;
        // etcd cancels a watch whose start revision was compacted away (WatchResponse.canceled with a
        // compact_revision); etcd3 reports only "Watcher canceled". Either way the watch is gone and
        // the caller must re-list, which is what ERR_KV_COMPACTED asks for.
        const k = /Watcher canceled/i.test((err as Error).message ?? '')
          ? new KvError('ERR_KV_COMPACTED', `etcd watch on ${prefix} canceled by the server (compacted?): re-list`, {
              cause: err,
            })
          : wrap(err, 'etcd watch');
        h.error(k);
        if (k.code === 'ERR_KV_COMPACTED') {
          void watcher.cancel().catch(() => {});
        }
      });
    })
    .catch((e) => h.error(wrap(e, 'etcd watch')));
  return {
    close: () => {
      closed = true;
      if (w) {
        void w.cancel().catch(() => {});
      }
    },
  };
}
