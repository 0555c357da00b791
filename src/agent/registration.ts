/**
 * This host's membership of the cluster: a lease, and under it the host record and every local endpoint's and
 * reservation's keys.
 *
 * Registration is level-triggered: register() puts all of them in one transaction, and runs at start, whenever
 * the lease is lost (an outage longer than the TTL), and retries with backoff until it succeeds. Deletes that
 * failed while the store was away are queued and done by the next pass.
 */
import { AgentError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import type { Kv, Lease, Op } from '../kv/kv.js';
import { type EndpointRec, keys } from '../kv/schema.js';
import { formatVtep } from '../common/vtep.js';

/** What an endpoint publishes: the state file's record has these fields (and more). */
export interface Published {
  name: string;
  network: string;
  ip: string;
  /** Dual stack: the endpoint's IPv6 address (canonical text). */
  ip6?: string;
  mac: string;
  netns: string;
  ifname: string;
  aliases: string[];
}

export interface Reservation {
  network: string;
  ip: string;
}

export interface RegistrationOptions {
  kv: Kv;
  host: string;
  vtep: number;
  port: number;
  leaseTtl: number;
  /** This run's nonce (hex): encrypted networks derive this host's send keys with it (schema.ts HostRec). */
  nonce: string;
  log: Logger;
  /** Everything this host holds in the store, read at each pass. */
  held: () => { endpoints: Iterable<Published>; reservations: Iterable<Reservation> };
}

export class Registration {
  private lease: Lease | null = null;
  private registering: Promise<void> | null = null;
  private registered = false;
  private pendingDeletes: string[] = [];
  private closed = false;

  constructor(private readonly o: RegistrationOptions) {}

  /** Grants a lease if needed and (re)puts the host key and every local endpoint's keys. Retries until done. */
  register(): Promise<void> {
    this.registering ??= (async () => {
      let delay = 500;
      while (!this.closed) {
        try {
          await this.registerOnce();
          this.registered = true;
          return;
        } catch (e) {
          this.registered = false;
          this.o.log.warn('cannot register with the KV store; retrying', {
            kv: this.o.kv.where,
            err: e,
            retryMs: delay,
          });
          await sleep(delay);
          delay = Math.min(delay * 2, 5000);
        }
      }
    })().finally(() => (this.registering = null));
    return this.registering;
  }

  private async registerOnce(): Promise<void> {
    const { kv, host } = this.o;
    if (!this.lease) {
      const lease = await kv.grantLease(this.o.leaseTtl);
      lease.onLost((err) => {
        if (this.lease !== lease || this.closed) return;
        this.o.log.warn('host lease lost; registering again', { err });
        this.lease = null;
        this.registered = false;
        void this.register();
      });
      this.lease = lease;
    }
    const lease = this.lease.id;
    const value = JSON.stringify({ vtep: formatVtep(this.o.vtep), port: this.o.port, nonce: this.o.nonce });
    const ops: Op[] = [{ type: 'put', key: keys.host(host), value, lease }];
    const held = this.o.held();
    for (const ep of held.endpoints) ops.push(...this.endpointOps(ep, lease));
    for (const r of held.reservations) ops.push(this.reservationOp(r, lease));
    await kv.txn([], ops);
    const pending = this.pendingDeletes;
    this.pendingDeletes = [];
    for (const k of pending) {
      try {
        await kv.delete(k);
      } catch (e) {
        this.pendingDeletes.push(k);
        throw e;
      }
    }
  }

  /** The puts that publish an endpoint: its address claim, its record and its name, under `lease`. */
  endpointOps(r: Published, lease: string): Op[] {
    const rec: Omit<EndpointRec, 'network' | 'mac'> = {
      ip: r.ip,
      ...(r.ip6 ? { ip6: r.ip6 } : {}),
      host: this.o.host,
      name: r.name,
      aliases: r.aliases,
      netns: r.netns,
      ifname: r.ifname,
    };
    return [
      { type: 'put', key: keys.ipam(r.network, r.ip), value: `${this.o.host}/${r.name}`, lease },
      ...(r.ip6
        ? [{ type: 'put' as const, key: keys.ipam(r.network, r.ip6), value: `${this.o.host}/${r.name}`, lease }]
        : []),
      { type: 'put', key: keys.endpoint(r.network, r.mac), value: JSON.stringify(rec), lease },
      { type: 'put', key: keys.name(r.network, r.name), value: this.o.host, lease },
    ];
  }

  reservationOp(r: Reservation, lease: string): Op {
    return { type: 'put', key: keys.ipam(r.network, r.ip), value: `${this.o.host}/reserved`, lease };
  }

  /** Deletes `ks` now, or at the next registration pass if the store does not answer. */
  async deleteOrQueue(ks: string[]): Promise<void> {
    try {
      await this.o.kv.txn(
        [],
        ks.map((key) => ({ type: 'delete' as const, key })),
      );
    } catch {
      this.pendingDeletes.push(...ks);
    }
  }

  /** Queues deletes for the next registration pass (start-up, before the store has been reached). */
  deleteLater(ks: string[]): void {
    this.pendingDeletes.push(...ks);
  }

  isRegistered(): boolean {
    return this.registered && this.lease !== null;
  }

  /** The lease id, or null before the first registration. */
  get leaseId(): string | null {
    return this.lease?.id ?? null;
  }

  /** The lease id for a write that must be registered; fails with ERR_KV_UNAVAILABLE otherwise. */
  requireLease(): string {
    const lease = this.lease?.id;
    if (!lease) throw new AgentError('ERR_KV_UNAVAILABLE', `not registered with the KV store at ${this.o.kv.where}`);
    return lease;
  }

  /** Fails with a message that says what still works, unless this host is registered. */
  requireRegistered(what: string): void {
    if (!this.isRegistered()) {
      throw new AgentError(
        'ERR_KV_UNAVAILABLE',
        `not registered with the KV store at ${this.o.kv.where} (is it reachable?); ${what}`,
      );
    }
  }

  close(): void {
    this.closed = true;
    this.lease?.release();
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
