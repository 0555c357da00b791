/**
 * Per-direction output queue: frames to write to local TAPs and datagrams to send, gathered while a batch is
 * processed and handed to the kernel in one writeBatch and one sendBatch at the end (or earlier, if a flood
 * fills the queue). Descriptors point into the direction's arena: replicas of one frame share its bytes.
 */
import type { Counters } from './counters.js';
import type { DataplaneAead, DataplaneIo } from './io.js';
import type { Port } from './port.js';

export const OUT_MAX = 1024; // descriptors per flush (native sendBatch takes up to 4 x MAX_BATCH)
const TAP_STRIDE = 4; // fd, off, len, prefix (zero virtio-net header bytes the kernel writes first)
const UDP_STRIDE = 6; // sock, off, len, ipv4, port, gsoSize
const SEAL_STRIDE = 3; // off, len, slot (native aeadSeal)

/** The ports a receive callback wrote to, in order; reused across callbacks (no allocation once grown). */
export class WrittenPorts {
  readonly list: (Port | null)[] = [];
  count = 0;

  add(p: Port): void {
    p.written = true;
    if (this.count === this.list.length) this.list.push(p);
    else this.list[this.count] = p;
    this.count++;
  }
}

export class OutQueue {
  private readonly tapDescs = new Int32Array(OUT_MAX * TAP_STRIDE);
  private readonly tapPorts: (Port | null)[] = new Array(OUT_MAX).fill(null);
  private tapCount = 0;
  private readonly udpDescs = new Int32Array(OUT_MAX * UDP_STRIDE);
  private udpCount = 0;
  private readonly sealDescs = new Int32Array(OUT_MAX * SEAL_STRIDE);
  private sealCount = 0;
  /** Each queued seal's length (the call replaces a failed one's with -errno). */
  private readonly sealLens = new Int32Array(OUT_MAX);

  constructor(
    private readonly io: DataplaneIo,
    private readonly arena: Uint8Array,
    private readonly sockFds: Int32Array,
    private readonly c: Counters,
    private readonly tapErrorReason: 'tx_tap_error' | 'rx_tap_error',
    /** Collects each port written to (once, by its `written` flag); null: not tracked. */
    private readonly written: WrittenPorts | null = null,
    /** Seals the datagrams of encrypted networks (null: none may be queued). */
    private readonly aead: DataplaneAead | null = null,
  ) {}

  /**
   * Queues a datagram's seal (encrypted networks): [off, off+len) is its VXLAN and crypto headers and the frame,
   * the tag goes after it. It runs at the next UDP flush, after every queued TAP write (a flood's local copies are
   * written before the frame is encrypted in place) and before the sends: queue the seal before the datagram's
   * udp(), and one seal serves every replica of the datagram.
   */
  seal(off: number, len: number, slot: number): void {
    if (this.sealCount === OUT_MAX) this.flushUdp();
    const d = this.sealCount * SEAL_STRIDE;
    this.sealDescs[d] = off;
    this.sealDescs[d + 1] = len;
    this.sealDescs[d + 2] = slot;
    this.sealLens[this.sealCount++] = len;
  }

  /**
   * Queues a frame for a local endpoint. A port with a virtio-net header gets a zero one written in front
   * (no offload, checksum complete) unless `raw`: then [off, off+len) already starts with its own header.
   */
  tap(port: Port, off: number, len: number, raw = false): void {
    if (this.tapCount === OUT_MAX) this.flushTaps();
    const d = this.tapCount * TAP_STRIDE;
    this.tapDescs[d] = port.fd;
    this.tapDescs[d + 1] = off;
    this.tapDescs[d + 2] = len;
    this.tapDescs[d + 3] = raw ? 0 : port.vnetHdrLen;
    this.tapPorts[this.tapCount++] = port;
  }

  /** Queues a datagram; gsoSize > 0 makes it one UDP GSO send cut by the kernel into gsoSize-byte datagrams. */
  udp(sock: number, off: number, len: number, vtep: number, port: number, gsoSize = 0): void {
    if (this.udpCount === OUT_MAX) this.flushUdp();
    const d = this.udpCount * UDP_STRIDE;
    this.udpDescs[d] = sock;
    this.udpDescs[d + 1] = off;
    this.udpDescs[d + 2] = len;
    this.udpDescs[d + 3] = vtep | 0;
    this.udpDescs[d + 4] = port;
    this.udpDescs[d + 5] = gsoSize;
    this.udpCount++;
  }

  flush(): void {
    if (this.udpCount > 0) this.flushUdp();
    if (this.tapCount > 0) this.flushTaps();
  }

  private flushSeals(): void {
    const n = this.sealCount;
    this.sealCount = 0;
    if (this.tapCount > 0) this.flushTaps();
    const sealed = this.aead!.aeadSeal(this.arena, this.sealDescs, n);
    this.c.tx_sealed += sealed;
    if (sealed === n) return;
    for (let i = 0; i < n; i++) {
      const d = i * SEAL_STRIDE;
      if (this.sealDescs[d + 1] >= 0) continue;
      // never sent in clear: a datagram that could not be sealed (a bug: a slot dropped while queued) goes out as
      // zeros, which every receiver drops as a bad tag
      this.arena.fill(0, this.sealDescs[d] + 8, this.sealDescs[d] + this.sealLens[i] + 16);
      this.c.tx_seal_error++;
      this.c.countErrno(this.sealDescs[d + 1]);
    }
  }

  private flushUdp(): void {
    if (this.sealCount > 0) this.flushSeals();
    const n = this.udpCount;
    this.udpCount = 0;
    const sent = this.io.sendBatch(this.sockFds, this.arena, this.udpDescs, n);
    this.c.tx_udp_datagrams += sent; // a GSO send counts once: see tx_gso_sends / tx_gso_segments
    if (sent !== n) {
      for (let i = 0; i < n; i++) {
        const len = this.udpDescs[i * UDP_STRIDE + 2];
        if (len < 0) {
          this.c.tx_udp_error++;
          this.c.countErrno(len);
        }
      }
    }
  }

  private flushTaps(): void {
    const n = this.tapCount;
    this.tapCount = 0;
    this.io.writeBatch(this.arena, this.tapDescs, n); // failures come back as -errno in each desc's len
    for (let i = 0; i < n; i++) {
      const p = this.tapPorts[i]!;
      this.tapPorts[i] = null;
      const len = this.tapDescs[i * TAP_STRIDE + 2];
      if (len < 0) {
        this.c[this.tapErrorReason]++;
        this.c.countErrno(len);
      } else {
        p.rxFrames++;
        p.rxBytes += len;
        if (this.written !== null && !p.written) this.written.add(p);
      }
    }
  }
}
