/**
 * An in-memory kernel for the data plane: TAP fds with an inbox (frames the "container" sends) and an outbox
 * (frames written to it), UDP fds with an inbox of datagrams and a list of what was sent. Same signatures as the
 * native addon, so the forwarding logic runs unchanged; `ready(fd)` fires the poll callback like libuv would.
 */
import type { DataplaneIo } from '../../src/dataplane/io.js';
import type { PollHandle } from '../../src/sys/native.js';

export interface Datagram {
  data: Uint8Array;
  addr: number; // peer IPv4 (source on receive, destination on send)
  port: number;
  sock?: number; // index of the transmit socket used
  gso?: number; // UDP GSO segment size (0: a single datagram)
}

export class FakeIo implements DataplaneIo {
  private next = 100;
  readonly tapIn = new Map<number, Uint8Array[]>();
  readonly tapOut = new Map<number, Uint8Array[]>();
  readonly udpIn = new Map<number, Datagram[]>();
  readonly sent: Datagram[] = [];
  private readonly polls = new Map<number, (status: number, events: number) => void>();
  /** Make the next sendBatch fail every message with this errno (negative), then reset. */
  failSends = 0;
  /** Writes to these TAP fds fail with EIO, in their own slot (a TAP the kernel refuses a frame). */
  failTapWrites = new Set<number>();
  /** Make readBatch on this fd throw (simulates a TAP whose namespace is gone). */
  brokenTaps = new Set<number>();
  /** Called inside writeBatch for each frame written to a TAP: a test's container can answer at once, as a real
   * one does (the kernel runs its stack inside the write). */
  onTapWrite: ((fd: number, frame: Uint8Array) => void) | null = null;
  /** readBatch calls per fd, including those that found nothing. */
  readonly reads = new Map<number, number>();

  tap(): number {
    const fd = this.next++;
    this.tapIn.set(fd, []);
    this.tapOut.set(fd, []);
    return fd;
  }

  udp(): number {
    const fd = this.next++;
    this.udpIn.set(fd, []);
    return fd;
  }

  ready(fd: number): void {
    const cb = this.polls.get(fd);
    if (!cb) throw new Error(`fd ${fd} is not polled`);
    cb(0, 1);
  }

  isPolled(fd: number): boolean {
    return this.polls.has(fd);
  }

  readBatch(fd: number, arena: Uint8Array, slot: number, off: number, max: number, lens: Int32Array): number {
    if (this.brokenTaps.has(fd))
      throw Object.assign(new Error('read: File descriptor in bad state (EBADFD)'), { code: 'EBADFD' });
    const q = this.tapIn.get(fd);
    if (!q) throw Object.assign(new Error('read: bad fd'), { code: 'EBADF' });
    this.reads.set(fd, (this.reads.get(fd) ?? 0) + 1);
    let n = 0;
    while (n < max && q.length) {
      const f = q.shift()!;
      const len = Math.min(f.length, slot - off);
      arena.set(f.subarray(0, len), n * slot + off);
      lens[n++] = len;
    }
    return n;
  }

  writeBatch(arena: Uint8Array, descs: Int32Array, count: number): number {
    let ok = 0;
    for (let i = 0; i < count; i++) {
      const [fd, off, len, prefix] = [descs[i * 4], descs[i * 4 + 1], descs[i * 4 + 2], descs[i * 4 + 3]];
      const q = this.tapOut.get(fd);
      if (!q) {
        descs[i * 4 + 2] = -9; // EBADF
        continue;
      }
      if (this.failTapWrites.has(fd)) {
        descs[i * 4 + 2] = -5; // EIO
        continue;
      }
      const f = new Uint8Array(prefix + len);
      f.set(arena.subarray(off, off + len), prefix);
      q.push(f);
      ok++;
      this.onTapWrite?.(fd, f);
    }
    return ok;
  }

  recvBatch(
    fd: number,
    arena: Uint8Array,
    slot: number,
    off: number,
    max: number,
    lens: Int32Array,
    addrs: Uint32Array,
    gsoSizes: Int32Array | null,
  ): number {
    const q = this.udpIn.get(fd)!;
    let n = 0;
    while (n < max && q.length) {
      const d = q.shift()!;
      if (d.data.length > slot - off) {
        lens[n] = -90; // EMSGSIZE
      } else {
        arena.set(d.data, n * slot + off);
        lens[n] = d.data.length;
      }
      addrs[2 * n] = d.addr >>> 0;
      addrs[2 * n + 1] = d.port;
      if (gsoSizes) gsoSizes[n] = d.gso ?? 0; // a UDP-GRO buffer: several datagrams of this size
      n++;
    }
    return n;
  }

  sendBatch(fds: Int32Array, arena: Uint8Array, descs: Int32Array, count: number): number {
    let sent = 0;
    for (let i = 0; i < count; i++) {
      const d = i * 6;
      if (this.failSends) {
        descs[d + 2] = this.failSends;
        continue;
      }
      this.sent.push({
        data: arena.slice(descs[d + 1], descs[d + 1] + descs[d + 2]),
        addr: descs[d + 3] >>> 0,
        port: descs[d + 4],
        sock: descs[d],
        gso: descs[d + 5],
      });
      sent++;
    }
    this.failSends = 0;
    void fds;
    return sent;
  }

  pollStart(fd: number, _events: number, cb: (status: number, events: number) => void): PollHandle {
    this.polls.set(fd, cb);
    return { fd } as unknown as PollHandle;
  }

  pollStop(h: PollHandle): number {
    this.polls.delete((h as unknown as { fd: number }).fd);
    return 0;
  }
}
