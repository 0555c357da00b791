/**
 * readBatch / writeBatch on a real TAP, through io_uring and through the one-syscall-per-frame loop: both must
 * give the same frames in the same order, lose nothing, report a failed write in that write's slot and leave
 * the others alone. The TAP lives in a namespace of its own (198.19.77.1/24, a static neighbour .2), so the
 * frames the namespace sends are the ones the test reads, and the frames it writes are the namespace's to
 * receive. Also: an agent reports io_uring in its stats and really uses it for its TAPs.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { native } from '../../src/sys/native.js';
import { createTap, type Tap } from '../../src/tap/tap.js';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Agent, isRoot, must, ROOT, seesNetwork, sh, sleep, Topo, waitPing } from '../helpers/topo.js';

const skip = isRoot() ? false : 'needs root (network namespaces, TAP devices)';
let topo: Topo;
let ns = '';
let tap: Tap;
const PEER_MAC = [0x02, 0x00, 0x00, 0x00, 0x77, 0x02];
const SLOT = 2048;
const OFF = 64;

before(async () => {
  if (skip) return;
  topo = new Topo();
  ns = topo.ns('u', { quiet: true });
  // no IPv6 in the namespace: its link-up chatter (router and neighbour solicitations, MLD) would share the TAP's
  // queue with the test's frames (seqs() skips such frames anyway)
  must(['ip', 'netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv6.conf.all.disable_ipv6=1']);
  must(['ip', 'netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv6.conf.default.disable_ipv6=1']);
  tap = await createTap({ ifname: 'eth0', netns: ns, mac: 0x02_00_00_00_77_01, mtu: 1500 });
  must(['ip', '-n', ns, 'addr', 'add', '198.19.77.1/24', 'dev', 'eth0']);
  must([
    'ip',
    '-n',
    ns,
    'neigh',
    'add',
    '198.19.77.2',
    'lladdr',
    PEER_MAC.map((b) => b.toString(16).padStart(2, '0')).join(':'),
    'dev',
    'eth0',
  ]);
  drain();
});

after(async () => {
  if (skip) return;
  native().ioUring(false);
  native().closeFd(tap.fd);
  await topo.cleanup();
});

/** Reads until the TAP is empty; returns the frames. */
function drain(batch = 64, fd = tap.fd): Buffer[] {
  const arena = new Uint8Array(SLOT * batch);
  const lens = new Int32Array(batch);
  const out: Buffer[] = [];
  for (;;) {
    const n = native().readBatch(fd, arena, SLOT, OFF, batch, lens);
    for (let i = 0; i < n; i++) out.push(Buffer.from(arena.subarray(i * SLOT + OFF, i * SLOT + OFF + lens[i])));
    if (n === 0) return out;
  }
}

/** The namespace sends `count` UDP datagrams to `to`:9 whose payload is their number. */
function sendFromNs(count: number, to = '198.19.77.2'): void {
  const py = `import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nfor i in range(${count}): s.sendto(b'seq%06d' % i, ('${to}', 9))\n`;
  must(['ip', 'netns', 'exec', ns, 'python3', '-c', py]);
}

/** UDP payloads ('seqNNNNNN') of the IPv4/UDP frames among `frames`, in order. */
function seqs(frames: Buffer[]): number[] {
  return frames
    .filter((f) => f.readUInt16BE(12) === 0x0800 && f[23] === 17 && f.readUInt16BE(36) === 9)
    .map((f) => Number(f.subarray(42, 51).toString().slice(3)));
}

for (const mode of ['io_uring', 'syscalls'] as const) {
  test(`readBatch through ${mode}: every frame the TAP queued, in order, in batches of 1 to 64`, { skip }, () => {
    const [status] = native().ioUring(mode === 'syscalls');
    assert.equal(status === 'on', mode === 'io_uring', status);
    for (const batch of [64, 7, 1]) {
      sendFromNs(300);
      const got = seqs(drain(batch));
      assert.deepEqual(
        got,
        Array.from({ length: 300 }, (_, i) => i),
        `batch ${batch}: ${got.length} frames`,
      );
    }
    // nothing queued: 0, not an error
    assert.equal(native().readBatch(tap.fd, new Uint8Array(SLOT * 4), SLOT, OFF, 4, new Int32Array(4)), 0);
  });

  test(
    `writeBatch through ${mode}: every frame reaches the namespace in order; a bad fd or range fails alone`,
    { skip },
    async () => {
      native().ioUring(mode === 'syscalls');
      const count = 200;
      const port = 7000 + (mode === 'io_uring' ? 1 : 2);
      const { spawn } = await import('node:child_process');
      const listener = spawn('ip', [
        'netns',
        'exec',
        ns,
        'python3',
        '-u',
        '-c',
        `import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.setsockopt(socket.SOL_SOCKET,socket.SO_RCVBUF,1<<20)\ns.bind(('198.19.77.1',${port}))\nprint('ready',flush=True)\ns.settimeout(2)\nout=[]\ntry:\n  while True: out.append(s.recv(100).decode())\nexcept socket.timeout: pass\nprint(' '.join(out))\n`,
      ]);
      let text = '';
      listener.stdout.on('data', (d: Buffer) => (text += d.toString()));
      const done = new Promise((r) => listener.once('exit', r));
      for (let i = 0; i < 100 && !text.includes('ready'); i++) await sleep(20);
      assert.ok(text.includes('ready'), 'listener started');
      // frames: Ethernet to the TAP's MAC, IPv4 198.19.77.2 -> .1, UDP 9 -> port, payload 'seqNNNNNN', no UDP checksum
      const arena = new Uint8Array(SLOT * (count + 2));
      const descs = new Int32Array(4 * (count + 2));
      let d = 0;
      const frame = (i: number): number => {
        const off = i * SLOT;
        const b = Buffer.from(arena.buffer, arena.byteOffset + off, 60);
        b.fill(0);
        b.writeUIntBE(0x02_00_00_00_77_01, 0, 6);
        Buffer.from(PEER_MAC).copy(b, 6);
        b.writeUInt16BE(0x0800, 12);
        b[14] = 0x45;
        b.writeUInt16BE(20 + 8 + 9, 16);
        b[22] = 64;
        b[23] = 17;
        Buffer.from([198, 19, 77, 2, 198, 19, 77, 1]).copy(b, 26);
        let sum = 0;
        for (let k = 14; k < 34; k += 2) sum += b.readUInt16BE(k);
        while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
        b.writeUInt16BE(~sum & 0xffff, 24);
        b.writeUInt16BE(9, 34);
        b.writeUInt16BE(port, 36);
        b.writeUInt16BE(8 + 9, 38);
        Buffer.from(`seq${String(i).padStart(6, '0')}`).copy(b, 42);
        return off;
      };
      const badFd = 100 * 1000;
      let atBadFd = -1;
      let atBadRange = -1;
      for (let i = 0; i < count; i++) {
        if (i === 50) descs.set([badFd, frame(count), 60, 0], 4 * (atBadFd = d++)); // a closed fd, between good frames
        if (i === 120) descs.set([tap.fd, arena.length - 10, 60, 0], 4 * (atBadRange = d++)); // past the arena's end
        descs.set([tap.fd, frame(i), 60, 0], 4 * d++);
      }
      const ok = native().writeBatch(arena, descs, d);
      assert.equal(ok, count, `${ok} of ${d} writes succeeded`);
      assert.equal(descs[4 * atBadFd + 2], -9, 'the write to a bad fd failed with EBADF in its own slot');
      assert.equal(descs[4 * atBadRange + 2], -22, 'the write past the arena failed with EINVAL in its own slot');
      await done;
      const got = text
        .replace('ready', '')
        .trim()
        .split(/\s+/)
        .map((s) => Number(s.slice(3)));
      assert.deepEqual(
        got,
        Array.from({ length: count }, (_, i) => i),
        `${got.length} datagrams received`,
      );
    },
  );
}

test('a TAP whose fd is past the read-hint table (>= 4096) gives the same frames, in order', { skip }, async () => {
  native().ioUring(false);
  const { openSync, closeSync } = await import('node:fs');
  const fillers: number[] = [];
  try {
    while (fillers.length < 5000 && (fillers.length === 0 || fillers[fillers.length - 1] < 4100))
      fillers.push(openSync('/dev/null', 'r'));
    const high = await createTap({ ifname: 'eth1', netns: ns, mac: 0x02_00_00_00_79_01, mtu: 1500 });
    try {
      assert.ok(high.fd >= 4096, `fd ${high.fd}`);
      must(['ip', '-n', ns, 'addr', 'add', '198.19.79.1/24', 'dev', 'eth1']);
      must(['ip', '-n', ns, 'neigh', 'add', '198.19.79.2', 'lladdr', '02:00:00:00:79:02', 'dev', 'eth1']);
      drain(64, high.fd);
      for (const batch of [64, 7, 1]) {
        sendFromNs(300, '198.19.79.2');
        const got = seqs(drain(batch, high.fd));
        assert.deepEqual(
          got,
          Array.from({ length: 300 }, (_, i) => i),
          `batch ${batch}: ${got.length} frames`,
        );
      }
    } finally {
      native().closeFd(high.fd);
    }
  } finally {
    for (const f of fillers) closeSync(f);
  }
});

test('an agent uses io_uring for its TAPs and reports it; --no-io-uring turns it off', { skip }, async () => {
  native().ioUring(false);
  const h1 = topo.host('h1');
  const h2 = topo.host('h2');
  const agents: Agent[] = [await topo.agent(h1), await topo.agent(h2, { extra: ['--no-io-uring'] })];
  await agents[0].call('POST', '/v1/networks', { name: 'u', subnet: '198.19.78.0/24' });
  const c1 = topo.ns('c1', { quiet: true });
  const c2 = topo.ns('c2', { quiet: true });
  await agents[0].call('POST', '/v1/endpoints', { network: 'u', netns: c1, name: 'c1', ip: '198.19.78.11' });
  await agents[1].call('POST', '/v1/endpoints', { network: 'u', netns: c2, name: 'c2', ip: '198.19.78.12' });
  assert.ok(await waitPing(c2, '198.19.78.11'), 'the overlay works with io_uring on one side and off on the other');
  type Uring = { io_uring: { status: string; enters: number; ops: number; single_reads: number } };
  const before = (await agents[0].call<Uring>('GET', '/v1/stats')).io_uring;
  // echoes 10 ms apart: each TAP read finds one frame (the reply) or none, so they take the single-frame path
  const r = sh(['ip', 'netns', 'exec', c2, 'ping', '-c', '20', '-i', '0.01', '-W', '1', '198.19.78.11']);
  assert.equal(r.code, 0, r.stdout);
  const s1 = await agents[0].call<Uring>('GET', '/v1/stats');
  const s2 = await agents[1].call<Uring>('GET', '/v1/stats');
  assert.equal(s1.io_uring.status, 'on');
  assert.ok(
    s1.io_uring.single_reads - before.single_reads >= 20,
    `sparse reads: ${JSON.stringify([before, s1.io_uring])}`,
  );
  assert.match(s2.io_uring.status, /^off: switched off/);
  // a burst (c1 answers a flood of 200 echoes sent back to back): reads that find frames queued go through io_uring
  // 20 echoes 10 ms apart form no runs of datagrams: nothing was coalesced into one send
  type Co = { udp_coalesced: { sends: number; datagrams: number } };
  const co0 = (await agents[0].call<Co>('GET', '/v1/stats')).udp_coalesced;
  assert.equal(co0.sends, 0, `sparse echoes coalesced: ${JSON.stringify(co0)}`);
  const f = sh([
    'ip',
    'netns',
    'exec',
    c2,
    'ping',
    '-f',
    '-l',
    '32',
    '-c',
    '200',
    '-W',
    '1',
    '-s',
    '1000',
    '198.19.78.11',
  ]);
  assert.equal(f.code, 0, f.stdout);
  const s1b = (await agents[0].call<Uring>('GET', '/v1/stats')).io_uring;
  assert.ok(s1b.enters > s1.io_uring.enters && s1b.ops >= s1b.enters, `burst: ${JSON.stringify([s1.io_uring, s1b])}`);
  // after the burst: whatever was coalesced, each coalesced send carried at least two datagrams
  const co = (await agents[0].call<Co>('GET', '/v1/stats')).udp_coalesced;
  assert.ok(co.datagrams >= 2 * co.sends, JSON.stringify(co));
  assert.equal(s2.io_uring.ops, 0);
});

test(
  "io_uring refused by seccomp (as by Docker's default profile): the agent warns and forwards without it",
  { skip },
  async () => {
    const noring = join(topo.dir, 'noring');
    must(['cc', '-O2', '-Wall', '-o', noring, join(ROOT, 'test/helpers/noring.c')]);
    const h3 = topo.host('h3');
    const h4 = topo.host('h4');
    const refused = await topo.agent(h3, { wrap: [noring] });
    const normal = await topo.agent(h4);
    await refused.call('POST', '/v1/networks', { name: 'sc', subnet: '198.19.80.0/24' });
    await seesNetwork(normal, 'sc');
    const c3 = topo.ns('c3', { quiet: true });
    const c4 = topo.ns('c4', { quiet: true });
    await refused.call('POST', '/v1/endpoints', { network: 'sc', netns: c3, name: 'c3', ip: '198.19.80.3' });
    await normal.call('POST', '/v1/endpoints', { network: 'sc', netns: c4, name: 'c4', ip: '198.19.80.4' });
    assert.ok(await waitPing(c4, '198.19.80.3'), 'forwarding works on the agent without io_uring');
    const r = sh(['ip', 'netns', 'exec', c4, 'ping', '-f', '-c', '200', '-W', '1', '198.19.80.3']);
    assert.equal(r.code, 0, r.stdout);
    type Uring = { io_uring: { status: string; ops: number } };
    const st = (await refused.call<Uring>('GET', '/v1/stats')).io_uring;
    assert.match(st.status, /^off: /, JSON.stringify(st));
    assert.doesNotMatch(st.status, /switched off/, 'refused by the kernel, not by --no-io-uring');
    assert.equal(st.ops, 0, 'no io_uring operation was submitted');
    assert.equal((await normal.call<Uring>('GET', '/v1/stats')).io_uring.status, 'on', 'the other agent uses it');
    const log = readFileSync(refused.logFile, 'utf8');
    assert.match(log, /io_uring unavailable/, 'the agent said so in its log');
    console.log(`# io_uring under seccomp: ${st.status}`);
  },
);
