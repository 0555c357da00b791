/**
 * sendBatch coalesces runs of equal-sized datagrams to one destination into one UDP GSO send. The receiver must
 * see exactly the datagrams that were queued: each one, in order, with its own bytes and length, whatever runs
 * they formed (another destination in between, a shorter last one, more than one send's worth). A path whose
 * MTU is below the datagrams' size makes the kernel refuse the GSO send: the datagrams then go one by one
 * (fragmented, as without coalescing) and still all arrive. Two namespaces joined by a veth; a Python receiver
 * without UDP GRO, so it sees datagrams as the wire carries them.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isRoot, must, sleep, Topo } from '../helpers/topo.js';

const skip = isRoot() ? false : 'needs root (network namespaces)';
const SENDER = join(resolve(fileURLToPath(import.meta.url), '..'), '../helpers/sendbatch.js');
let topo: Topo;
let a = '';
let b = '';

before(() => {
  if (skip) return;
  topo = new Topo();
  a = topo.ns('a', { quiet: true });
  b = topo.ns('b', { quiet: true });
  const [va, vb] = [`${topo.tag}a`, `${topo.tag}b`];
  must(['ip', 'link', 'add', va, 'netns', a, 'type', 'veth', 'peer', 'name', vb, 'netns', b]);
  must(['ip', '-n', a, 'addr', 'add', '198.18.77.1/24', 'dev', va]);
  must(['ip', '-n', b, 'addr', 'add', '198.18.77.2/24', 'dev', vb]);
  for (const [ns, dev] of [
    [a, va],
    [b, vb],
  ])
    must(['ip', '-n', ns, 'link', 'set', dev, 'mtu', '1280', 'up']);
});

after(async () => {
  if (topo) await topo.cleanup();
});

/** Receives on 198.18.77.2 ports 9001 and 9002 until 1.5 s pass quietly; returns "port:len:seqNNNNNN:ok" lines. */
async function receive(send: () => string): Promise<{ got: string[]; out: string }> {
  const py = [
    'import socket, select, sys',
    'ss = []',
    'for p in (9001, 9002):',
    '  s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)',
    "  s.bind(('198.18.77.2', p)); ss.append((s, p))",
    "print('ready', flush=True)",
    'while True:',
    '  r, _, _ = select.select([s for s, _ in ss], [], [], 1.5)',
    '  if not r: break',
    '  for s, p in ss:',
    '    if s in r:',
    '      d = s.recv(65535); i = int(d[3:9]); fill = bytes([0x61 + i % 26]) * (len(d) - 9)',
    "      print('%d:%d:%s:%s' % (p, len(d), d[:9].decode(), 'ok' if d[9:] == fill else 'BAD'), flush=True)",
  ].join('\n');
  const rx = spawn('ip', ['netns', 'exec', b, 'python3', '-u', '-c', py]);
  let text = '';
  rx.stdout.on('data', (d: Buffer) => (text += d.toString()));
  const done = new Promise((r) => rx.once('exit', r));
  for (let i = 0; i < 200 && !text.includes('ready'); i++) await sleep(20);
  assert.ok(text.includes('ready'), 'receiver started');
  const out = send();
  await done;
  return { got: text.split('\n').filter((l) => /^\d+:/.test(l)), out };
}

const sendBatch = (spec: [string, number, number, number][]) => () =>
  must(['ip', 'netns', 'exec', a, 'node', SENDER, '198.18.77.1', JSON.stringify(spec)]);

/** The lines the receiver must print for `spec`, in order (per port: the receiver reads two sockets). */
function expected(spec: [string, number, number, number][]): string[] {
  const out: string[] = [];
  let i = 0;
  for (const [, port, len, count] of spec)
    for (let k = 0; k < count; k++, i++) out.push(`${port}:${len}:seq${String(i).padStart(6, '0')}:ok`);
  return out;
}
const byPort = (lines: string[], port: number) => lines.filter((l) => l.startsWith(`${port}:`));

test(
  'runs of equal datagrams go as GSO sends and arrive as the datagrams queued, in order, byte for byte',
  { skip },
  async () => {
    const A = '198.18.77.2';
    const spec: [string, number, number, number][] = [
      [A, 9001, 100, 70], // more than one send's worth (64 per send)
      [A, 9002, 100, 5], // another port in between: a new run
      [A, 9001, 100, 30],
      [A, 9001, 60, 1], // a shorter one ends the run (the GSO send's last segment)
      [A, 9001, 100, 10],
      [A, 9001, 1200, 3], // larger: a run of its own
    ];
    const { got, out } = await receive(sendBatch(spec));
    const r = JSON.parse(out) as { sent: number; failed: number[]; coalesced: [number, number] };
    const total = spec.reduce((s, x) => s + x[3], 0);
    assert.equal(r.sent, total, out);
    assert.deepEqual(r.failed, []);
    assert.ok(r.coalesced[0] >= 5 && r.coalesced[1] >= total - 5, `coalesced sends/datagrams ${r.coalesced}`);
    for (const p of [9001, 9002]) assert.deepEqual(byPort(got, p), byPort(expected(spec), p), `port ${p}`);
  },
);

test(
  'a path MTU below the datagrams: the GSO send is refused and each datagram goes alone, none lost',
  { skip },
  async () => {
    const spec: [string, number, number, number][] = [['198.18.77.2', 9001, 1400, 20]];
    const { got, out } = await receive(sendBatch(spec));
    const r = JSON.parse(out) as { sent: number; failed: number[]; coalesced: [number, number] };
    assert.equal(r.sent, 20, out);
    assert.deepEqual(r.failed, []);
    assert.ok(r.coalesced[0] >= 1, `the datagrams were coalesced first (then refused by the kernel): ${out}`);
    assert.deepEqual(got, expected(spec));
  },
);
