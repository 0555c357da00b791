/**
 * Keys of encrypted networks: from the store's records to the data plane's AEAD slots, and their rotation.
 *
 * - A network's record carries its keys (schema.ts NetKey: generation, 32 random bytes, a start time), made by the
 *   agent that creates the network and rotated by any agent that has endpoints on it (below).
 * - Nobody seals with the network key itself. Each sender seals with its own key, derived with HKDF-SHA256 from
 *   the network key, with the sender's run nonce (16 random bytes in its host record, drawn at each start) as the
 *   salt and the VNI, the generation and the sender's VTEP as the info; 36 bytes come out, the AES-256 key and a
 *   4-byte nonce salt. A sender's counter then starts at 0 under a key no one else and no earlier run of it ever
 *   used, so a (key, nonce) pair is never used twice, however often agents restart, without any state on disk.
 * - A receiver derives the same keys for every other host with endpoints on the network (one per generation),
 *   each with its replay window (sec.ts), and accepts every generation the record lists.
 * - Rotation: when the newest key is `rotateSec` old, an agent adds the next generation with a start time
 *   GRACE later (every agent has it installed for receiving before anyone sends with it); when the newest has
 *   been in use for GRACE, the ones before it are removed. Writes are compare-and-swap on the record, so
 *   agents checking at once write one change. A host that can no longer read the store (removed from the
 *   cluster) has no key for the next generation: it can read nothing sent after the switch, and what it sends
 *   with an old key is refused once that key is removed, GRACE after the switch.
 */
import { hkdfSync, randomBytes } from 'node:crypto';
import type { Fdb } from '../fdb/fdb.js';
import { RxKey, TxKey, VnetSec } from '../fdb/sec.js';
import type { Kv } from '../kv/kv.js';
import { type ClusterState, keys as kvKeys, type NetKey, type NetworkRec, parseNetwork } from '../kv/schema.js';
import { type Logger, throttled } from '../common/log.js';
import { parseVtep, vtepFamily } from '../common/vtep.js';
import type { Port } from '../dataplane/port.js';

/** The overlap: a new key is installed everywhere this long before it is used, an old one kept this long after. */
export const graceMs = (rotateSec: number): number => Math.min(60_000, (rotateSec * 1000) / 4);
/** Docker's encrypted overlay rotates every 12 hours; so do we by default. */
export const DEFAULT_ROTATE_SEC = 12 * 3600;

export const newNetKey = (gen: number, from: number): NetKey => ({
  gen,
  key: randomBytes(32).toString('base64'),
  from,
});

/**
 * What a network's keys should be at `now`: a new generation when the newest is due, the old ones gone when the
 * newest has been in use for the grace period. Returns the new list (null: no change) and when to look again.
 */
export function planKeys(
  cur: readonly NetKey[],
  rotateSec: number,
  now: number,
  make: (gen: number, from: number) => NetKey = newNetKey,
): { keys: NetKey[] | null; next: number } {
  const grace = graceMs(rotateSec);
  let out = [...cur];
  let changed = false;
  const newest = out[out.length - 1];
  if (newest.from <= now && newest.from + rotateSec * 1000 <= now) {
    out.push(make(newest.gen + 1, now + grace));
    changed = true;
  }
  const inUse = usable(out, now);
  if (inUse !== out[0] && inUse.from + grace <= now) {
    out = out.filter((k) => k.gen >= inUse.gen);
    changed = true;
  }
  const last = out[out.length - 1];
  let next = last.from <= now ? last.from + rotateSec * 1000 : last.from; // the next rotation, or the switch
  if (inUse !== out[0]) next = Math.min(next, inUse.from + grace); // removing the old ones
  return { keys: changed ? out : null, next: Math.max(next, now + 1) };
}

/** The key senders use at `now`: the newest that has started (the oldest if none has). */
export function usable(ks: readonly NetKey[], now: number): NetKey {
  let k = ks[0];
  for (const x of ks) if (x.from <= now) k = x;
  return k;
}

/** A sender's key and nonce salt for one generation (see the top of this file). */
export function deriveKey(
  netKey: string,
  nonceHex: string,
  vni: number,
  gen: number,
  vtep: string,
): { key: Uint8Array; salt: Uint8Array } {
  const info = Buffer.alloc(8);
  info.writeUInt32BE(vni, 0);
  info.writeUInt32BE(gen >>> 0, 4);
  const out = Buffer.from(
    hkdfSync(
      'sha256',
      Buffer.from(netKey, 'base64'),
      Buffer.from(nonceHex, 'hex'),
      Buffer.concat([Buffer.from('vxtap aead v1 '), info, Buffer.from(vtep)]),
      36,
    ),
  );
  return { key: out.subarray(0, 32), salt: out.subarray(32, 36) };
}

export interface KeyringAead {
  aeadKey(slot: number, key: Uint8Array, salt: Uint8Array): number;
  aeadDrop(slot: number): number;
}

/** One derived key in its slot: this host's send key, or one sender's receive key. */
interface Installed {
  slot: number;
  tx: TxKey | null;
  rx: RxKey | null;
}

interface NetState {
  vni: number;
  sec: VnetSec;
  /** "tx/GEN" and "VTEP/NONCE/GEN" -> its slot (and receive key). */
  slots: Map<string, Installed>;
  timer: NodeJS.Timeout | null;
}

const SLOTS = 65536;

export class Keyring {
  private readonly nets = new Map<string, NetState>();
  private readonly freeSlots: number[] = [];
  private nextSlot = 0;
  private closed = false;
  private readonly rotateWarning: (fields: Record<string, unknown>) => void;

  constructor(
    private readonly o: {
      fdb: Fdb<Port>;
      st: ClusterState;
      kv: Kv;
      aead: KeyringAead;
      /** This host: its name, VTEP (text) and run nonce (hex). */
      self: string;
      selfVtep: string;
      nonce: string;
      family: 4 | 6;
      /** Whether this host has endpoints on the network (only then it gets keys, and rotates them). */
      active: (network: string) => boolean;
      log: Logger;
      now?: () => number;
    },
  ) {
    this.rotateWarning = throttled(o.log, 'cannot rotate the network keys; retrying');
  }

  private now(): number {
    return (this.o.now ?? Date.now)();
  }

  /** Networks with keys here, for `vxtap stats`: the generation this host sends with and the senders it knows. */
  status(): Record<string, { sendGen: number | null; keyIds: number[]; senders: number }> {
    const out: Record<string, { sendGen: number | null; keyIds: number[]; senders: number }> = {};
    for (const [name, n] of this.nets) {
      const rec = this.o.st.networks.get(name);
      const tx = [...n.slots.keys()].find((k) => k.startsWith('tx/'));
      out[name] = {
        sendGen: tx ? Number(tx.slice(3)) : null,
        keyIds: (rec?.keys ?? []).map((k) => k.gen & 0xff),
        senders: n.sec.rx.size,
      };
    }
    return out;
  }

  /** Makes the network's keys here equal to what its record and the hosts on it say. Cheap when nothing changed. */
  sync(name: string): void {
    if (this.closed) return;
    const rec = this.o.st.networks.get(name);
    let n = this.nets.get(name);
    if (n && (!rec || rec.vni !== n.vni || !rec.encrypted)) {
      this.forget(name, n);
      n = undefined;
    }
    if (!rec?.encrypted || !rec.keys || !this.o.fdb.vnets.has(rec.vni)) return;
    if (!n) {
      n = { vni: rec.vni, sec: new VnetSec(), slots: new Map(), timer: null };
      this.nets.set(name, n);
    }
    if (this.o.fdb.vnets.get(rec.vni)!.sec !== n.sec) this.o.fdb.setSec(rec.vni, n.sec);
    const want = new Map<string, { vtep: number; keyId: number; derive: () => ReturnType<typeof deriveKey> }>();
    const now = this.now();
    const active = this.o.active(name);
    if (active) {
      const tx = usable(rec.keys, now);
      want.set(`tx/${tx.gen}`, {
        vtep: -1,
        keyId: tx.gen & 0xff,
        derive: () => deriveKey(tx.key, this.o.nonce, rec.vni, tx.gen, this.o.selfVtep),
      });
      for (const host of this.o.st.hostsOn(name)) {
        if (host === this.o.self) continue;
        const h = this.o.st.hosts.get(host);
        if (!h?.nonce) continue; // an agent without encryption (older), or its record is gone
        let vtep: number;
        try {
          vtep = parseVtep(h.vtep);
        } catch {
          continue;
        }
        if (vtepFamily(vtep) !== this.o.family) continue;
        for (const k of rec.keys) {
          const nonce = h.nonce;
          want.set(`${vtep}/${nonce}/${k.gen}`, {
            vtep,
            keyId: k.gen & 0xff,
            derive: () => deriveKey(k.key, nonce, rec.vni, k.gen, h.vtep),
          });
        }
      }
    }
    for (const [id, s] of n.slots) {
      if (want.has(id)) continue;
      n.slots.delete(id);
      this.freeSlot(s.slot);
    }
    let txSet = false;
    const rx = new Map<number, RxKey[]>();
    for (const [id, w] of want) {
      let s = n.slots.get(id);
      if (!s) {
        const slot = this.allocSlot();
        const d = w.derive();
        this.o.aead.aeadKey(slot, d.key, d.salt);
        s =
          w.vtep === -1
            ? { slot, tx: new TxKey(slot, w.keyId), rx: null }
            : { slot, tx: null, rx: new RxKey(slot, w.keyId) };
        n.slots.set(id, s);
      }
      if (w.vtep === -1) {
        // the object, not the slot number, says which key: a freed slot is reused at once
        n.sec.tx = s.tx;
        txSet = true;
      } else {
        const l = rx.get(w.vtep | 0);
        if (l) l.push(s.rx!);
        else rx.set(w.vtep | 0, [s.rx!]);
      }
    }
    if (!txSet) n.sec.tx = null;
    n.sec.rx.clear();
    for (const [v, l] of rx) n.sec.rx.set(v, l);
    this.schedule(name, n, rec, active);
  }

  /** Syncs every encrypted network (after host records changed, say). */
  syncAll(): void {
    for (const [name, rec] of this.o.st.networks) if (rec.encrypted || this.nets.has(name)) this.sync(name);
    for (const name of [...this.nets.keys()]) if (!this.o.st.networks.has(name)) this.sync(name);
  }

  close(): void {
    this.closed = true;
    for (const [name, n] of this.nets) this.forget(name, n);
  }

  /** The next look at the network: its switch to a new key, its next rotation, the removal of old keys. */
  private schedule(name: string, n: NetState, rec: NetworkRec, active: boolean): void {
    if (n.timer) clearTimeout(n.timer);
    n.timer = null;
    if (!active) return;
    const now = this.now();
    const { keys, next } = planKeys(rec.keys!, rec.rotateSec!, now);
    if (keys) void this.rotate(name);
    // a key's start may come before any record change: look again then (the switch is local, no write)
    const wait = Math.min(Math.max(next - now, 10), 3600_000) + (keys ? 1000 : 0);
    n.timer = setTimeout(() => {
      n.timer = null;
      this.sync(name);
    }, wait);
    n.timer.unref();
  }

  /** Writes the planned keys, compare-and-swap on the record: of agents doing it at once, one wins. */
  private async rotate(name: string): Promise<void> {
    try {
      const e = await this.o.kv.get(kvKeys.network(name));
      const rec = e && parseNetwork(name, e.value);
      if (!e || !rec?.encrypted) return;
      const { keys } = planKeys(rec.keys!, rec.rotateSec!, this.now());
      if (!keys) return;
      const raw = JSON.parse(e.value) as Record<string, unknown>;
      raw.keys = keys;
      const r = await this.o.kv.txn(
        [{ key: kvKeys.network(name), modRevision: e.modRevision }],
        [{ type: 'put', key: kvKeys.network(name), value: JSON.stringify(raw) }],
      );
      if (r.succeeded)
        this.o.log.info('network keys rotated', {
          network: name,
          generations: keys.map((k) => k.gen),
          switchAt: new Date(keys[keys.length - 1].from).toISOString(),
        });
    } catch (err) {
      this.rotateWarning({ network: name, err }); // retried about once a second: logged once a minute at most
    }
  }

  private forget(name: string, n: NetState): void {
    if (n.timer) clearTimeout(n.timer);
    for (const s of n.slots.values()) this.freeSlot(s.slot);
    n.slots.clear();
    // the VnetSec stays, empty: a network kept here for its local endpoints after its record went (or before a new
    // one comes) sends nothing between hosts rather than anything in clear; Networks.apply makes a VNI plaintext
    // only when a record says so, and deleting the VNI takes it away
    n.sec.tx = null;
    n.sec.rx.clear();
    this.nets.delete(name);
  }

  private allocSlot(): number {
    const s = this.freeSlots.pop();
    if (s !== undefined) return s;
    if (this.nextSlot >= SLOTS) throw new Error(`more than ${SLOTS} keys of encrypted networks on one host`);
    return this.nextSlot++;
  }

  private freeSlot(slot: number): void {
    this.o.aead.aeadDrop(slot);
    this.freeSlots.push(slot);
  }
}
