/**
 * One key-value interface for the control plane, with two backends that pass the same conformance suite
 * (test/kv/conformance.ts): etcd (etcd.ts) across machines, and an embedded single-file store (embedded.ts) that
 * several agents on one machine share.
 *
 * Semantics follow etcd v3, the subset vxtap needs:
 * - a store-wide revision that every write increments; entries carry createRevision and modRevision
 * - transactions: all compares hold -> apply `success` ops, else `failure` ops; atomically
 * - a compare is on one key's modRevision (0 = "the key must not exist"): create-if-absent and compare-and-swap
 * - leases: a TTL; keys put with a lease vanish when it expires or is revoked; keep-alive is automatic
 * - watch from a revision: every event after it, in order; if the store compacted past it, the watcher gets
 *   ERR_KV_COMPACTED and must re-list (the reconciler does)
 */

export interface KvEntry {
  key: string;
  value: string;
  createRevision: number;
  modRevision: number;
  lease: string | null;
}

export interface KvEvent {
  type: 'put' | 'delete';
  key: string;
  value: string | null; // null for delete
  modRevision: number;
}

/** Holds when the key's modRevision equals `modRevision` (0: the key does not exist). */
export interface Compare {
  key: string;
  modRevision: number;
}

export type Op =
  | { type: 'put'; key: string; value: string; lease?: string }
  | { type: 'delete'; key: string }
  | { type: 'deletePrefix'; prefix: string };

export interface TxnResult {
  succeeded: boolean;
  revision: number;
}

export interface Lease {
  readonly id: string;
  readonly ttlSec: number;
  /** Called once if the lease expires or keep-alive fails for good; its keys are (or will be) gone. */
  onLost(cb: (err: KvError) => void): void;
  /** Deletes the lease and its keys now. */
  revoke(): Promise<void>;
  /** Stops keep-alive without revoking (the lease then expires by itself). */
  release(): void;
}

export interface WatchHandler {
  /** Events in revision order; `revision` is the store revision they bring the watcher up to. */
  events(events: KvEvent[], revision: number): void;
  /** ERR_KV_COMPACTED (re-list needed) or ERR_KV_UNAVAILABLE (the backend retries; events resume in order). */
  error(err: KvError): void;
  /** The backend re-established the watch after ERR_KV_UNAVAILABLE. */
  reconnected?(): void;
}

export interface Watch {
  close(): void;
}

export interface Kv {
  readonly kind: 'etcd' | 'embedded';
  /** Human-readable location (endpoints or file path) for logs and errors. */
  readonly where: string;
  /** Whether the store's traffic is protected from the network (the embedded store: a local file; etcd: TLS).
   * Encrypted networks keep their keys in the store, so the agent refuses to create one on a store that is not,
   * unless told otherwise (--insecure-kv). */
  readonly confidential: boolean;
  get(key: string): Promise<KvEntry | null>;
  list(prefix: string): Promise<{ entries: KvEntry[]; revision: number }>;
  /** After ERR_KV_UNAVAILABLE: a reason that retrying will not fix (a TLS handshake etcd or we refuse), or null.
   * gRPC reports such a failure only as "no connection established". */
  diagnose?(): Promise<string | null>;
  /** How many keys are under `prefix` now (no values read): the reconciler's check of a quiet watch. */
  count(prefix: string): Promise<{ count: number; revision: number }>;
  put(key: string, value: string, lease?: string): Promise<number>;
  delete(key: string): Promise<boolean>;
  txn(compares: Compare[], success: Op[], failure?: Op[]): Promise<TxnResult>;
  grantLease(ttlSec: number): Promise<Lease>;
  /** Watches every key under `prefix` for events with revision > fromRevision. */
  watch(prefix: string, fromRevision: number, handler: WatchHandler): Watch;
  /** Called once if the store is lost for good (ERR_KV_FATAL: the embedded store's file was deleted or replaced
   * under it); the agent must stop rather than go on alone. */
  onFatal?(cb: (err: KvError) => void): void;
  close(): Promise<void>;
}

export type KvErrorCode =
  | 'ERR_KV_UNAVAILABLE'
  | 'ERR_KV_COMPACTED'
  | 'ERR_KV_LEASE_LOST'
  | 'ERR_KV_INVALID'
  | 'ERR_KV_FATAL'
  /** etcd refused who we are: a certificate it does not trust or that does not trust it, or a wrong user or
   * password. Retrying does not help. */
  | 'ERR_KV_AUTH';

export class KvError extends Error {
  readonly code: KvErrorCode;
  constructor(code: KvErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'KvError';
    this.code = code;
  }
}

/** The end of a prefix range: the smallest string greater than every string starting with `prefix`. */
export function prefixEnd(prefix: string): string {
  return prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
}
