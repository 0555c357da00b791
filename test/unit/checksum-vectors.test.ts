/**
 * Known answers for the Internet checksum from the RFCs, for the JS sum and the native one the data plane may use:
 * vectors someone else computed, not vxtap's sum checked against itself. (The kernel's checksums and segmentation
 * are the known answers of test/netns/known-answer.test.ts.)
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { native } from '../../src/sys/native.js';
import { finish, pseudoSumV4, sum16 } from '../../src/vxlan/checksum.js';

const sums = { js: sum16, native: native().sum16 };

for (const [name, f] of Object.entries(sums)) {
  test(`RFC 1071 section 3 example (${name}): 00 01 f2 03 f4 f5 f6 f7 sums to ddf2, checksum 220d`, () => {
    const b = Uint8Array.from([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
    assert.equal(f(b, 0, 8), 0xddf2);
    assert.equal(finish(f(b, 0, 8)), 0x220d);
    // the same bytes at an odd offset inside a larger buffer, and split in two with the first sum carried over
    const big = new Uint8Array(41);
    big.set(b, 17);
    assert.equal(f(big, 17, 25), 0xddf2);
    assert.equal(f(b, 4, 8, f(b, 0, 4)), 0xddf2);
    // byte order independence (RFC 1071 section 2B): the byte-swapped data sums to the byte-swapped sum
    const sw = Uint8Array.from([0x01, 0x00, 0x03, 0xf2, 0xf5, 0xf4, 0xf7, 0xf6]);
    assert.equal(f(sw, 0, 8), 0xf2dd);
  });

  test(`an odd length pads with a zero byte (${name}); a buffer holding its own checksum sums to ffff`, () => {
    // RFC 1071 section 4.1's rule for the odd byte: add it as the high half of a word
    const b = Uint8Array.from([0x00, 0x01, 0xf2, 0x03, 0xf4]);
    assert.equal(f(b, 0, 5), (0x0001 + 0xf203 + 0xf400) % 0xffff);
    const c = Uint8Array.from([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7, 0x22, 0x0d]);
    assert.equal(f(c, 0, 10), 0xffff);
    // the all-zero and all-ones edge cases of ones' complement arithmetic
    assert.equal(f(new Uint8Array(64), 0, 64), 0);
    assert.equal(f(new Uint8Array(64).fill(0xff), 0, 64), 0xffff);
    // 64 KB of 0xff bytes: the running sum must not overflow or lose carries; odd, the last one pads to ff00
    assert.equal(f(new Uint8Array(65534).fill(0xff), 0, 65534), 0xffff);
    assert.equal(f(new Uint8Array(65535).fill(0xff), 0, 65535), 0xff00);
  });
}

test('IPv4 pseudo-header sum (RFC 768 / RFC 793 layout): source, destination, zero, protocol, length', () => {
  // 198.19.1.2 -> 198.19.1.3, UDP, 28 bytes: c613 + 0102 + c613 + 0103 + 0011 + 001c
  const want = 0xc613 + 0x0102 + 0xc613 + 0x0103 + 0x0011 + 0x001c;
  assert.equal(pseudoSumV4(0xc6130102, 0xc6130103, 17, 28), (want & 0xffff) + (want >>> 16));
});
