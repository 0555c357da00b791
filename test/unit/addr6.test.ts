import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Address6 } from 'ip-address';
import { fitsIpv4, formatAddress6, inSubnet6, ipv6ForIpv4, parseSubnet, parseSubnet6 } from '../../src/common/addr.js';
import { formatIpv6, parseIpv6 } from '../../src/vxlan/ipv6.js';

test('IPv6 text: RFC 4291 forms parse, RFC 5952 canonical form out; ip-address agrees', () => {
  const cases: [string, string][] = [
    ['2001:db8::1', '2001:db8::1'],
    ['2001:0db8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
    ['2001:DB8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // the first of equal runs
    ['2001:db8:0:0:0:1:0:0', '2001:db8::1:0:0'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // a single zero group stays
    ['::', '::'],
    ['::1', '::1'],
    ['fe80::', 'fe80::'],
    ['::ffff:198.19.1.2', '::ffff:c613:102'],
    ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
  ];
  for (const [input, want] of cases) {
    const b = parseIpv6(input);
    assert.equal(formatIpv6(b), want, input);
    assert.equal(new Address6(input).correctForm(), want, `ip-address on ${input}`);
  }
  for (const bad of [
    '',
    ':',
    '1::2::3',
    '12345::',
    '1:2:3:4:5:6:7',
    '1:2:3:4:5:6:7:8:9',
    'g::',
    '::1.2.3',
    '::256.1.1.1',
    '1:2:3:4:5:6:7::8:9',
  ])
    assert.throws(() => parseIpv6(bad), TypeError, bad);
});

test('IPv6 subnets: normalised, host bits refused, prefix /48-/120; the address that goes with an IPv4 one', () => {
  const s = parseSubnet6('2001:DB8:1:0::/64');
  assert.equal(s.cidr, '2001:db8:1::/64');
  assert.equal(formatAddress6(s.last), '2001:db8:1:0:ffff:ffff:ffff:ffff');
  assert.throws(() => parseSubnet6('2001:db8:1::1/64'), /host bits set; did you mean 2001:db8:1::\/64/);
  assert.throws(() => parseSubnet6('2001:db8::/32'), /\/48 to \/120/);
  assert.throws(() => parseSubnet6('198.19.1.0/24'), /not a valid IPv6 CIDR/);
  assert.ok(!inSubnet6(s.network, s), 'the subnet-router anycast address is not a host address');
  assert.ok(inSubnet6(s.last, s));
  const v4 = parseSubnet('198.19.1.0/24');
  assert.equal(formatAddress6(ipv6ForIpv4(s, 0xc6130107, v4)), '2001:db8:1::7');
  assert.equal(formatAddress6(ipv6ForIpv4(s, 0xc61301fe, v4)), '2001:db8:1::fe');
  assert.ok(fitsIpv4(s, v4));
  assert.ok(!fitsIpv4(parseSubnet6('2001:db8:1::/120'), parseSubnet('198.19.0.0/16')));
});
