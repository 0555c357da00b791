/**
 * Encrypted networks (issue 27, docs/encryption.md), with real agents, TAPs and namespaces:
 *   h1, h2: vxtap agents on one embedded store; h3: an agent on etcd without TLS (the refusal)
 *   sec   (198.19.20.0/24, VNI 5001, encrypted):  c1 (h1, .10), c2 (h2, .20)
 *   plain (198.19.21.0/24, VNI 5002):              p1 (h1, .10), p2 (h2, .20)
 *   rot   (198.19.22.0/24, VNI 5003, encrypted, keys rotated every 8 s): r1 (h1, .10), r2 (h2, .20)
 * Captures read the underlay with tshark; forged datagrams are sent from h1's VTEP address, so they pass the
 * known-VTEP check and meet the crypto checks.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { startCapture } from '../helpers/capture.js';
import { type EtcdServer, startEtcd } from '../helpers/etcd.js';
import {
  type Agent,
  isRoot,
  must,
  ping,
  seesNetwork,
  sh,
  tcpTransfer,
  Topo,
  until,
  waitPing,
} from '../helpers/topo.js';

const skip = isRoot() ? false : 'needs root (network namespaces)';
const SENDRAW = join(import.meta.dirname, '../helpers/sendraw.js');
let topo: Topo;
let etcd: EtcdServer;
const ag: Record<string, Agent> = {};
const h: Record<string, { ns: string; addr: string; ifname: string }> = {};
const ns: Record<string, string> = {};
/** What the pings carry: it must never be seen on the underlay for the encrypted network. */
const PATTERN = '5658544150534543'; // "VXTAPSEC"

const counters = async (a: Agent): Promise<Record<string, number>> =>
  (await a.call<{ counters: Record<string, number> }>('GET', '/v1/stats')).counters;

/** The UDP payloads (hex) of a capture's VXLAN datagrams. */
function payloads(pcap: string): string[] {
  return must(['tshark', '-r', pcap, '-n', '-T', 'fields', '-e', 'udp.payload'])
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
}
const vniOf = (hex: string): number => parseInt(hex.slice(8, 14), 16);

async function capture(name: string, during: () => Promise<void>): Promise<string[]> {
  const pcap = join(topo.dir, `${name}.pcap`);
  const cap = await startCapture(topo, h.h2.ns, h.h2.ifname, 'udp dst port 4789', pcap);
  // live once it prints a packet (of the plain network: the tests count only what `during` sends on the others)
  assert.ok(
    await until(() => ping(ns.p1, '198.19.21.20', 1).received === 1 && cap.printed().length > 0, 10_000),
    'the capture sees the underlay',
  );
  await during();
  // and everything `during` sent is through the filter once a later packet is printed
  const seen = cap.printed().split('\n').length;
  await until(
    () => ping(ns.p1, '198.19.21.20', 1).received === 1 && cap.printed().split('\n').length > seen + 1,
    10_000,
  );
  await cap.stop();
  return payloads(pcap);
}

before(async () => {
  if (skip) return;
  topo = new Topo();
  for (const n of ['h1', 'h2', 'h3']) h[n] = topo.host(n);
  for (const n of ['c1', 'c2', 'p1', 'p2', 'r1', 'r2']) ns[n] = topo.ns(n, { quiet: true });
  ag.h1 = await topo.agent(h.h1);
  ag.h2 = await topo.agent(h.h2, { extra: ['--metrics', '127.0.0.1:9410'] });
  await ag.h1.call('POST', '/v1/networks', { name: 'sec', vni: 5001, subnet: '198.19.20.0/24', encrypted: true });
  await ag.h1.call('POST', '/v1/networks', { name: 'plain', vni: 5002, subnet: '198.19.21.0/24' });
  await ag.h1.call('POST', '/v1/networks', {
    name: 'rot',
    vni: 5003,
    subnet: '198.19.22.0/24',
    encrypted: true,
    keyRotationSec: 8,
  });
  for (const n of ['sec', 'plain', 'rot']) await seesNetwork(ag.h2, n);
  for (const [a, e, net, ip] of [
    ['h1', 'c1', 'sec', '198.19.20.10'],
    ['h2', 'c2', 'sec', '198.19.20.20'],
    ['h1', 'p1', 'plain', '198.19.21.10'],
    ['h2', 'p2', 'plain', '198.19.21.20'],
    ['h1', 'r1', 'rot', '198.19.22.10'],
    ['h2', 'r2', 'rot', '198.19.22.20'],
  ])
    await ag[a].call('POST', '/v1/endpoints', { network: net, netns: ns[e], name: e, ip });
  for (const [from, to] of [
    ['c1', '198.19.20.20'],
    ['p1', '198.19.21.20'],
    ['r1', '198.19.22.20'],
  ])
    assert.ok(await waitPing(ns[from], to), `${from} reaches ${to}`);
});

after(async () => {
  if (etcd) await etcd.stop();
  if (topo) await topo.cleanup();
});

test(
  'an encrypted network: MTU 1422, nothing of the payload on the wire, TCP byte-exact both ways',
  { skip },
  async () => {
    const net = await ag.h2.call<{ mtu: number; encrypted: boolean; keys: { sendGen: number; senders: number } }>(
      'GET',
      '/v1/networks/sec',
    );
    assert.equal(net.mtu, 1422, '1450 - 28 (crypto header 12 + tag 16)');
    assert.equal(net.encrypted, true);
    assert.equal(net.keys.sendGen, 1);
    assert.equal(net.keys.senders, 1, 'h2 holds a key for h1');
    assert.match(must(['ip', '-n', ns.c1, 'link', 'show', 'eth0']), /mtu 1422/);
    const before1 = await counters(ag.h1);
    const before2 = await counters(ag.h2);
    const seen = await capture('wire', async () => {
      for (const [from, to] of [
        ['c1', '198.19.20.20'],
        ['p1', '198.19.21.20'],
      ]) {
        const r = sh(['ip', 'netns', 'exec', ns[from], 'ping', '-n', '-q', '-c', '5', '-i', '0.05', '-p', PATTERN, to]);
        assert.match(r.stdout, / 0% packet loss/, `${from}: ${r.stdout}`);
      }
    });
    const sealed = seen.filter((p) => vniOf(p) === 5001);
    const clear = seen.filter((p) => vniOf(p) === 5002);
    assert.ok(
      sealed.length >= 5 && clear.length >= 5,
      `datagrams seen: ${sealed.length} sealed, ${clear.length} plain`,
    );
    // the control: the plain network's pings carry the pattern in clear
    assert.ok(
      clear.some((p) => p.includes(PATTERN.repeat(2))),
      `the pattern is visible on the plain network: ${clear.join(' ')}`,
    );
    for (const p of sealed) {
      assert.equal(p.slice(0, 2), '0a', 'flags: I and the sealed bit');
      assert.equal(p.slice(16, 18), '01', 'key id 1');
      assert.ok(!p.includes(PATTERN.slice(0, 8)), `no 4 bytes of the pattern in ${p}`);
    }
    // each sealed datagram is 28 bytes longer than the plain one of the same ping
    const lens = (l: string[]) => [...new Set(l.map((p) => p.length / 2))].sort((a, b) => b - a)[0];
    assert.equal(lens(sealed) - lens(clear), 28);
    for (const [a, b] of [
      ['c1', 'c2'],
      ['c2', 'c1'],
    ]) {
      const size = 8 * 1024 * 1024 + 7;
      const t = await tcpTransfer(topo, ns[a], ns[b], b === 'c2' ? '198.19.20.20' : '198.19.20.10', size);
      assert.equal(t.got.bytes, size);
      assert.equal(t.got.sha256, t.sent.sha256, `TCP ${a} -> ${b} content intact`);
    }
    const after1 = await counters(ag.h1);
    const after2 = await counters(ag.h2);
    for (const [b, a] of [
      [before1, after1],
      [before2, after2],
    ]) {
      assert.ok(a.tx_sealed - b.tx_sealed > 1000, `sealed ${a.tx_sealed - b.tx_sealed}`);
      assert.ok(a.rx_opened - b.rx_opened > 1000, `opened ${a.rx_opened - b.rx_opened}`);
      for (const k of ['rx_bad_tag', 'rx_replay', 'rx_too_old', 'rx_unknown_key', 'rx_unsealed', 'tx_seal_error'])
        assert.equal(a[k] - b[k], 0, k);
    }
    assert.ok(after1.tx_gso_segments > before1.tx_gso_segments, 'TSO super-frames were split and sealed per segment');
  },
);

test('forged, tampered, truncated, replayed and wrong-key datagrams are dropped and counted', { skip }, async () => {
  const seen = await capture('forge', async () => {
    const r = ping(ns.c1, '198.19.20.20', 3, 0.05);
    assert.equal(r.received, 3);
  });
  const orig = seen.find((p) => vniOf(p) === 5001);
  assert.ok(orig, 'a sealed datagram from h1');
  const b = Buffer.from(orig, 'hex');
  const fresh = (d: Buffer): Buffer => {
    const x = Buffer.from(d);
    x.writeBigUInt64BE(BigInt(x.readBigUInt64BE(12)) + 1_000_000n, 12); // far ahead: not a replay
    return x;
  };
  const tampered = Buffer.from(b);
  tampered[30] ^= 1; // a bit of the ciphertext (the counter as captured: already received, so make it fresh too)
  const wrongId = fresh(b);
  wrongId[8] ^= 0x55;
  // sealed by someone with the right layout and key id but another key
  const forged = fresh(b);
  const cipher = createCipheriv(
    'aes-256-gcm',
    randomBytes(32),
    Buffer.concat([randomBytes(4), forged.subarray(12, 20)]),
  );
  cipher.setAAD(forged.subarray(0, 20));
  const body = Buffer.concat([cipher.update(forged.subarray(20, forged.length - 16)), cipher.final()]);
  const forgedDgram = Buffer.concat([forged.subarray(0, 20), body, cipher.getAuthTag()]);
  // the inner frame in clear, for the encrypted VNI; and a sealed one for the plain VNI
  const plainForSec = Buffer.concat([Buffer.from('0800000000138900', 'hex'), randomBytes(60)]);
  const sealedForPlain = Buffer.from(b);
  sealedForPlain.writeUIntBE(5002, 4, 3);
  const sends: [string, Buffer][] = [
    ['rx_replay', b],
    ['rx_bad_tag', fresh(tampered)],
    ['rx_bad_tag', fresh(b).subarray(0, b.length - 10)], // truncated
    ['rx_bad_tag', forgedDgram],
    ['rx_unknown_key', wrongId],
    ['rx_unsealed', plainForSec],
    ['rx_sealed_unexpected', sealedForPlain],
  ];
  const want: Record<string, number> = {};
  for (const [k] of sends) want[k] = (want[k] ?? 0) + 1;
  const before2 = await counters(ag.h2);
  must([
    'ip',
    'netns',
    'exec',
    h.h1.ns,
    'node',
    SENDRAW,
    h.h1.addr,
    h.h2.addr,
    '4789',
    ...sends.map(([, d]) => d.toString('hex')),
  ]);
  let got: Record<string, number> = {};
  await until(async () => {
    const a = await counters(ag.h2);
    got = Object.fromEntries(Object.keys(want).map((k) => [k, a[k] - before2[k]]));
    return Object.keys(want).every((k) => got[k] >= want[k]);
  }, 5000);
  assert.deepEqual(got, want);
  // and /metrics says the same
  const m = must([
    'ip',
    'netns',
    'exec',
    h.h2.ns,
    'node',
    '-e',
    'fetch("http://127.0.0.1:9410/metrics").then(r=>r.text()).then(t=>process.stdout.write(t))',
  ]);
  const metric = (re: RegExp) => Number(re.exec(m)?.[1] ?? NaN);
  assert.ok(metric(/^vxtap_drops_total\{reason="rx_bad_tag"[^}]*\} (\d+)/m) >= 3, 'bad tags in /metrics');
  assert.ok(metric(/^vxtap_sealed_total\{direction="rx"[^}]*\} (\d+)/m) > 0, 'opened datagrams in /metrics');
  // nothing of it reached c2, and the network still works
  assert.equal(ping(ns.c1, '198.19.20.20', 3, 0.05).received, 3);
  const a2 = await counters(ag.h2);
  assert.equal(a2.rx_opened - before2.rx_opened, 3, 'only the three real echo requests opened');
});

test('keys rotate under a running transfer: no ping lost, TCP intact, old keys removed', { skip }, async () => {
  type Keys = { sendGen: number; keyIds: number[] };
  const gen = async (a: Agent) => (await a.call<{ keys: Keys }>('GET', '/v1/networks/rot')).keys;
  const g0 = await gen(ag.h1);
  const before2 = await counters(ag.h2);
  const before1 = await counters(ag.h1);
  // 20 s of pings every 20 ms both ways (two rotations at least), with TCP transfers meanwhile
  const pinger = topo.spawn([
    'ip',
    'netns',
    'exec',
    ns.r1,
    'ping',
    '-n',
    '-q',
    '-c',
    '1000',
    '-i',
    '0.02',
    '198.19.22.20',
  ]);
  let out = '';
  pinger.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  const done = new Promise<void>((r) => pinger.once('exit', () => r()));
  const gens = new Set<number>();
  const t0 = Date.now();
  while (Date.now() - t0 < 19_000) {
    const t = await tcpTransfer(topo, ns.r2, ns.r1, '198.19.22.10', 4 * 1024 * 1024);
    assert.equal(t.got.sha256, t.sent.sha256, 'TCP intact across a key change');
    gens.add((await gen(ag.h1)).sendGen);
    gens.add((await gen(ag.h2)).sendGen);
  }
  await done;
  assert.match(out, /1000 packets transmitted, 1000 received/, out);
  const g1 = await gen(ag.h1);
  assert.ok(g1.sendGen >= g0.sendGen + 2, `generations ${g0.sendGen} -> ${g1.sendGen} (seen ${[...gens]})`);
  assert.ok(g1.keyIds.length <= 2, `old keys removed: ${g1.keyIds}`);
  const a2 = await counters(ag.h2);
  const a1 = await counters(ag.h1);
  for (const [b, a] of [
    [before1, a1],
    [before2, a2],
  ])
    for (const k of ['rx_bad_tag', 'rx_unknown_key', 'rx_replay', 'tx_no_key']) assert.equal(a[k] - b[k], 0, k);
});

test('an agent restarted draws a new nonce: traffic resumes under new keys', { skip }, async () => {
  await topo.stopAgent(ag.h2);
  ag.h2 = await topo.agent(h.h2);
  assert.ok(await waitPing(ns.c1, '198.19.20.20', 15_000), 'c1 reaches c2 again');
  assert.equal(ping(ns.c2, '198.19.20.10', 5, 0.05).received, 5);
  const c = await counters(ag.h2);
  assert.ok(c.rx_opened > 0 && c.tx_sealed > 0);
});

test('an encrypted network over etcd without TLS is refused unless --insecure-kv', { skip }, async () => {
  etcd = await startEtcd(topo.service());
  ag.h3 = await topo.agent(h.h3, { kv: `etcd://${etcd.endpoint}` });
  const r = ag.h3.cli(['network', 'create', 'x', '--subnet', '198.19.23.0/24', '--encrypted']);
  assert.notEqual(r.code, 0);
  assert.match(r.stderr, /plain text.*--kv-ca.*--insecure-kv/s);
  // a plain network is fine there
  assert.equal(ag.h3.cli(['network', 'create', 'y', '--subnet', '198.19.24.0/24']).code, 0);
  await topo.stopAgent(ag.h3);
  ag.h3 = await topo.agent(h.h3, { kv: `etcd://${etcd.endpoint}`, extra: ['--insecure-kv'] });
  const ok = ag.h3.cli(['network', 'create', 'x', '--subnet', '198.19.23.0/24', '--encrypted', '--key-rotation', '1h']);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /encrypted \(keys rotate every 3600 s\)/);
});
