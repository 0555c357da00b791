/**
 * An encrypted network's keys as the data plane uses them (docs/encryption.md has the wire format and the key
 * schedule). The control plane (src/agent/keyring.ts) derives the keys, installs them in the addon's AEAD slots
 * and fills these objects; the data plane only reads them, bumps the send counter and moves the replay windows.
 *
 * A sealed VXLAN datagram:
 *   [0, 8)          VXLAN header, flags SEALED_FLAGS (I plus a reserved bit no VXLAN extension Linux knows uses,
 *                   so a receiver without encryption drops it as malformed rather than delivering ciphertext)
 *   [8, 20)         key id (1), reserved zero (3), counter (8, big-endian)
 *   [20, len - 16)  the inner Ethernet frame, encrypted (AES-256-GCM; AAD = bytes [0, 20))
 *   [len - 16, len) the GCM tag
 */
import { ReplayWindow } from '../vxlan/replay.js';

export const SEALED_FLAGS = 0x0a;
/** The crypto header after the VXLAN header, and the tag at the end. */
export const SEAL_HLEN = 12;
export const SEAL_TAG = 16;
/** Bytes a sealed datagram has beyond a plain one. */
export const SEAL_OVERHEAD = SEAL_HLEN + SEAL_TAG;

/** What this host sends with: one AEAD slot, its key id, and the next counter (never reused under the key). */
export class TxKey {
  counter = 0;
  constructor(
    readonly slot: number,
    readonly keyId: number,
  ) {}
}

/** One sender's key of one generation, and its replay window. */
export class RxKey {
  readonly window = new ReplayWindow();
  constructor(
    readonly slot: number,
    readonly keyId: number,
  ) {}
}

export class VnetSec {
  /** Null until the network has a key this host may send with: frames for other hosts are dropped (tx_no_key). */
  tx: TxKey | null = null;
  /** Sender VTEP (as int32: a small-integer key, no boxing per lookup) -> its keys, one per accepted generation. */
  readonly rx = new Map<number, RxKey[]>();

  /** The key of sender `vtep` with id `keyId`, or undefined. */
  rxKey(vtep: number, keyId: number): RxKey | undefined {
    const l = this.rx.get(vtep | 0);
    if (l === undefined) return undefined;
    for (let i = 0; i < l.length; i++) if (l[i].keyId === keyId) return l[i];
    return undefined;
  }
}

/** Writes the VXLAN and crypto headers of a sealed datagram at `at` and takes the next counter of `k`. */
export function writeSealHeaders(buf: Uint8Array, at: number, vni: number, k: TxKey): void {
  const n = k.counter++;
  buf[at] = SEALED_FLAGS;
  buf[at + 1] = 0;
  buf[at + 2] = 0;
  buf[at + 3] = 0;
  buf[at + 4] = (vni >>> 16) & 0xff;
  buf[at + 5] = (vni >>> 8) & 0xff;
  buf[at + 6] = vni & 0xff;
  buf[at + 7] = 0;
  buf[at + 8] = k.keyId;
  buf[at + 9] = 0;
  buf[at + 10] = 0;
  buf[at + 11] = 0;
  const hi = Math.floor(n / 0x100000000);
  const lo = n >>> 0;
  buf[at + 12] = hi >>> 24;
  buf[at + 13] = (hi >>> 16) & 0xff;
  buf[at + 14] = (hi >>> 8) & 0xff;
  buf[at + 15] = hi & 0xff;
  buf[at + 16] = lo >>> 24;
  buf[at + 17] = (lo >>> 16) & 0xff;
  buf[at + 18] = (lo >>> 8) & 0xff;
  buf[at + 19] = lo & 0xff;
}

/** The counter of the sealed datagram at `at`. */
export function readSealCounter(buf: Uint8Array, at: number): number {
  const hi = ((buf[at + 12] << 24) | (buf[at + 13] << 16) | (buf[at + 14] << 8) | buf[at + 15]) >>> 0;
  const lo = ((buf[at + 16] << 24) | (buf[at + 17] << 16) | (buf[at + 18] << 8) | buf[at + 19]) >>> 0;
  return hi * 0x100000000 + lo;
}

/** The receive path's scratch for opening a batch's sealed datagrams in one aeadOpen call (made on first use). */
export class OpenBatch {
  readonly descs: Int32Array;
  readonly keys: (RxKey | null)[];
  readonly counters: Float64Array;
  count = 0;
  /** Per receive buffer: 1 when it was a UDP GRO buffer of sealed datagrams, all opened and moved together into a
   * plain buffer (rcv.ts compact); its datagrams are then an encrypted network's, authenticated. */
  readonly compacted: Uint8Array;
  constructor(
    readonly max: number,
    buffers: number,
  ) {
    this.descs = new Int32Array(max * 3);
    this.keys = new Array<RxKey | null>(max).fill(null);
    this.counters = new Float64Array(max);
    this.compacted = new Uint8Array(buffers);
  }
}
