/**
 * Anti-replay for encrypted networks (as IPsec ESP, RFC 4303 section 3.4.3, and WireGuard do): per sender and
 * key, the highest counter seen and a bitmap of the WINDOW counters below it. A datagram is checked before it is
 * opened (cheap: a replay or a too-old one costs no decryption) and committed only after its tag verified, so a
 * forged datagram can never move the window.
 *
 * Counters are Numbers: exact to 2^53, which a sender reaches after 28 years at 10 million datagrams a second
 * (keys rotate long before).
 */
export const REPLAY_WINDOW = 2048;

export type ReplayVerdict = 'ok' | 'replay' | 'old';

export class ReplayWindow {
  /** The highest counter committed, -1 before the first. */
  top = -1;
  private readonly bits = new Uint32Array(REPLAY_WINDOW / 32);

  /** Whether `n` may be opened: new, or inside the window and not seen. Changes nothing. */
  check(n: number): ReplayVerdict {
    if (n > this.top) return 'ok';
    if (n <= this.top - REPLAY_WINDOW) return 'old';
    const i = n % REPLAY_WINDOW;
    return this.bits[i >>> 5] & (1 << (i & 31)) ? 'replay' : 'ok';
  }

  /** Records `n` as received (call after its tag verified and check said ok). */
  commit(n: number): void {
    if (n > this.top) {
      // clear the slots the window slides past: those of top+1 .. n-1 (all of them if it jumps a whole window)
      const gap = n - this.top;
      if (gap >= REPLAY_WINDOW || this.top < 0) this.bits.fill(0);
      else
        for (let k = this.top + 1; k < n; k++) {
          const i = k % REPLAY_WINDOW;
          this.bits[i >>> 5] &= ~(1 << (i & 31));
        }
      this.top = n;
      const i = n % REPLAY_WINDOW;
      // the slot of n held n - WINDOW (now outside): overwrite it
      this.bits[i >>> 5] |= 1 << (i & 31);
      return;
    }
    const i = n % REPLAY_WINDOW;
    this.bits[i >>> 5] |= 1 << (i & 31);
  }
}
