/**
 * The cluster name server (src/agent/dns.ts) on loopback: what it answers from a store snapshot, scoping of bare
 * names, malformed queries dropped and counted, SERVFAIL without an upstream, and forwarding to an upstream.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import dnsPacket from 'dns-packet';
import { DnsServer, resolvConfServers } from '../../src/agent/dns.js';
import { localAsker } from '../../src/agent/dnsaccess.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClusterState, type EndpointRec, keys } from '../../src/kv/schema.js';
import { silentLogger } from '../../src/common/log.js';

const eps: Record<string, EndpointRec[]> = {
  app: [
    {
      network: 'app',
      mac: '02:76:c6:13:01:02',
      ip: '198.19.1.2',
      host: 'h1',
      name: 'dk-1',
      aliases: ['web', 'c0ffee'],
    },
    { network: 'app', mac: '02:76:c6:13:01:03', ip: '198.19.1.3', host: 'h2', name: 'Client', aliases: [] },
  ],
  db: [{ network: 'db', mac: '02:76:c6:13:02:02', ip: '198.19.2.2', host: 'h1', name: 'dk-2', aliases: ['pg', 'web'] }],
  'my.net': [{ network: 'my.net', mac: '02:76:c6:13:03:02', ip: '198.19.3.2', host: 'h1', name: 'x', aliases: [] }],
};

// the name server reads the cluster state's name index, built here from the records above as the store would
const state = new ClusterState();
state.replace(
  Object.values(eps)
    .flat()
    .map((e) => ({
      key: keys.endpoint(e.network, e.mac),
      value: JSON.stringify({ ip: e.ip, host: e.host, name: e.name, aliases: e.aliases }),
    })),
);

function server(o: Partial<ConstructorParameters<typeof DnsServer>[0]> = {}): DnsServer {
  return new DnsServer({
    address: '127.0.0.1',
    port: 0,
    upstream: ['none'],
    named: (n, label) => state.named(n, label),
    networks: () => Object.keys(eps),
    log: silentLogger,
    ...o,
  });
}

test('lookup: names, aliases, name.network, case, scope, dotted network names', () => {
  const d = server();
  assert.deepEqual(d.lookup('web', null)?.sort(), ['198.19.1.2', '198.19.2.2']);
  assert.deepEqual(d.lookup('web', new Set(['db'])), ['198.19.2.2']);
  assert.equal(d.lookup('web', new Set(['other'])), null, "a bare name outside the asker's networks is not ours");
  assert.deepEqual(d.lookup('web.app', new Set(['db'])), ['198.19.1.2'], 'name.network is answered from anywhere');
  assert.deepEqual(d.lookup('WEB.App.', null), ['198.19.1.2']);
  assert.deepEqual(d.lookup('client', null), ['198.19.1.3']);
  assert.deepEqual(d.lookup('x.my.net', null), ['198.19.3.2']);
  assert.equal(d.lookup('nope', null), null);
  assert.equal(d.lookup('web.nope', null), null);
  assert.equal(d.lookup('example.com', null), null);
});

type Reply = dnsPacket.Packet & { rcode?: string };

async function ask(port: number, msg: Buffer, waitMs = 1500): Promise<Reply | null> {
  const s = createSocket('udp4');
  try {
    return await new Promise((resolve) => {
      const t = setTimeout(() => resolve(null), waitMs);
      s.on('message', (m) => {
        clearTimeout(t);
        resolve(dnsPacket.decode(m));
      });
      s.send(msg, port, '127.0.0.1');
    });
  } finally {
    s.close();
  }
}

const query = (name: string, type: 'A' | 'AAAA' = 'A', id = 7) =>
  dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name, class: 'IN' }] });

function portOf(d: DnsServer): number {
  return (d as unknown as { sock: { address(): { port: number } } }).sock.address().port;
}

test('on the wire: A answers with TTL, empty AAAA, SERVFAIL without upstream, malformed dropped and counted', async () => {
  const d = server();
  await d.start();
  try {
    const port = portOf(d);
    let r = await ask(port, query('web.app'));
    assert.equal(r?.id, 7);
    assert.deepEqual(
      r?.answers?.map((a) => [a.type, (a as { data: string }).data, (a as { ttl?: number }).ttl]),
      [['A', '198.19.1.2', 5]],
    );
    assert.equal(r?.rcode, 'NOERROR');
    r = await ask(port, query('web.app', 'AAAA', 8));
    assert.equal(r?.rcode, 'NOERROR');
    assert.deepEqual(r?.answers, []);
    r = await ask(port, query('example.com', 'A', 9));
    assert.equal(r?.rcode, 'SERVFAIL');
    for (const junk of [Buffer.alloc(0), Buffer.from([1, 2, 3]), Buffer.alloc(12, 0xff)])
      assert.equal(await ask(port, junk, 300), null);
    assert.equal(d.stats.malformed, 3);
    r = await ask(port, query('client.app', 'A', 10));
    assert.equal(r?.rcode, 'NOERROR', 'still answering after junk');
    assert.deepEqual(d.stats, {
      queries: 7,
      answered: 3,
      forwarded: 0,
      servfail: 1,
      malformed: 3,
      refused: 0,
      forged: 0,
    });
  } finally {
    d.close();
  }
});

test("the asker's networks are looked up only for bare names (the plugin asks dockerd for them)", async () => {
  const asked: string[] = [];
  const d = server({ scope: (ip) => (asked.push(ip), new Set(['db'])) });
  await d.start();
  try {
    const port = portOf(d);
    let r = await ask(port, query('web', 'A', 21));
    assert.deepEqual(
      r?.answers?.map((a) => (a as { data: string }).data),
      ['198.19.2.2'],
      "a bare name: only the asker's network",
    );
    assert.equal(asked.length, 1);
    r = await ask(port, query('web.app', 'A', 22));
    assert.deepEqual(
      r?.answers?.map((a) => (a as { data: string }).data),
      ['198.19.1.2'],
    );
    r = await ask(port, query('example.com', 'A', 23));
    assert.equal(r?.rcode, 'SERVFAIL');
    assert.equal(asked.length, 1, 'qualified and foreign names need no scope');
  } finally {
    d.close();
  }
});

test('names that are not ours go to the upstream, and its answer comes back', async () => {
  const up = createSocket('udp4');
  await new Promise<void>((r) => up.bind(0, '127.0.0.1', () => r()));
  up.on('message', (m, rinfo) => {
    const q = dnsPacket.decode(m);
    up.send(
      dnsPacket.encode({
        type: 'response',
        id: q.id,
        questions: q.questions,
        answers: [{ type: 'A', name: q.questions![0].name, ttl: 60, data: '198.18.99.99' }],
      }),
      rinfo.port,
      rinfo.address,
    );
  });
  const d = server({ upstream: [`127.0.0.1:${up.address().port}`] });
  await d.start();
  try {
    const r = await ask(portOf(d), query('elsewhere.example', 'A', 11));
    assert.equal(r?.id, 11);
    assert.deepEqual(
      r?.answers?.map((a) => (a as { data: string }).data),
      ['198.18.99.99'],
    );
    assert.equal(d.stats.forwarded, 1);
  } finally {
    d.close();
    up.close();
  }
});

test('the default upstream is the IPv4 nameservers of resolv.conf, in order; none when the file is missing', () => {
  const dir = mkdtempSync(join(tmpdir(), 'vxt-dns-'));
  try {
    const f = join(dir, 'resolv.conf');
    writeFileSync(
      f,
      [
        '# generated by something',
        'search example.internal',
        'nameserver 198.18.0.53',
        '  nameserver   198.18.0.54  ',
        'nameserver 2001:db8::53',
        '; nameserver 198.18.0.99',
        'options ndots:2 timeout:1',
        'nameserver 198.18.0.55',
      ].join('\n'),
    );
    assert.deepEqual(resolvConfServers(f), ['198.18.0.53', '198.18.0.54', '198.18.0.55']);
    assert.deepEqual(resolvConfServers(join(dir, 'absent')), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('closed: an asker that is not this host or one of its containers gets REFUSED, no name and no forwarding', async () => {
  let upstreamAsked = 0;
  const up = createSocket('udp4');
  await new Promise<void>((r) => up.bind(0, '127.0.0.1', () => r()));
  up.on('message', () => upstreamAsked++);
  const d = server({ upstream: [`127.0.0.1:${up.address().port}`], allowed: () => false });
  await d.start();
  try {
    const port = portOf(d);
    for (const [name, id] of [
      ['web.app', 31],
      ['elsewhere.example', 32],
    ] as const) {
      const r = await ask(port, query(name, 'A', id));
      assert.equal(r?.rcode, 'REFUSED', name);
      assert.equal(r?.id, id);
      assert.deepEqual(r?.answers, []);
    }
    assert.equal(upstreamAsked, 0, 'nothing was forwarded');
    assert.equal(d.stats.refused, 2);
    assert.equal(d.stats.answered + d.stats.forwarded, 0);
  } finally {
    d.close();
    up.close();
  }
});

test('forged upstream replies (another port, wrong ID, wrong question) are dropped; the real one arrives', async () => {
  const up = createSocket('udp4');
  const other = createSocket('udp4');
  await new Promise<void>((r) => up.bind(0, '127.0.0.1', () => r()));
  await new Promise<void>((r) => other.bind(0, '127.0.0.1', () => r()));
  const seenIds: number[] = [];
  const answer = (id: number, name: string, data: string) =>
    dnsPacket.encode({
      type: 'response',
      id,
      questions: [{ type: 'A', name }],
      answers: [{ type: 'A', name, ttl: 60, data }],
    });
  up.on('message', (m, rinfo) => {
    const q = dnsPacket.decode(m);
    const name = q.questions![0].name;
    seenIds.push(q.id!);
    const send = (s: typeof up, b: Buffer) => s.send(b, rinfo.port, rinfo.address);
    send(other, answer(q.id!, name, '198.18.66.1')); // right ID and question, from another port
    send(up, answer((q.id! + 1) & 0xffff, name, '198.18.66.2')); // wrong ID
    send(up, answer(q.id!, 'other.example', '198.18.66.3')); // wrong question
    setTimeout(() => send(up, answer(q.id!, name, '198.18.99.99')), 50); // the real one
  });
  const d = server({ upstream: [`127.0.0.1:${up.address().port}`] });
  await d.start();
  try {
    const r = await ask(portOf(d), query('elsewhere.example', 'A', 41));
    assert.equal(r?.id, 41, "the client's own ID");
    assert.deepEqual(
      r?.answers?.map((a) => (a as { data: string }).data),
      ['198.18.99.99'],
    );
    assert.equal(d.stats.forged, 2, 'wrong ID and wrong question dropped (the other port never reaches the socket)');
    assert.equal(seenIds.length, 1);
  } finally {
    d.close();
    up.close();
    other.close();
  }
});

test("who may ask: loopback, this host's addresses, local endpoints, the local dockerd's containers", async () => {
  const containers = new Set(['198.18.77.5']);
  const ok = localAsker({
    endpointAddrs: () => ['198.19.1.2', '2001:db8:1::2'],
    container: async (ip) => containers.has(ip),
  });
  for (const ip of ['127.0.0.1', '::1', '::ffff:127.0.0.1', '198.19.1.2', '2001:db8:1::2', '198.18.77.5'])
    assert.equal(await ok(ip), true, ip);
  for (const ip of ['198.18.0.99', '198.19.1.3', '2001:db8:1::3']) assert.equal(await ok(ip), false, ip);
  const noDocker = localAsker({ endpointAddrs: () => [] });
  assert.equal(await noDocker('198.18.77.5'), false);
});
