/**
 * Every plugin call, as dockerd 20.10 makes it (docs/docker.md): answers, error fields (network driver "Err",
 * IPAM "Error"), empty and broken bodies, Docker's call sequences, its rollbacks, concurrency and persistence
 * across an agent restart. The agent is real (its own host namespace, real TAPs, the embedded store); the Docker
 * Engine API it consults for names is a small fake on a unix socket, so each call's logic is checked directly.
 * The same calls from a real dockerd are covered by e2e.test.ts.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, request, type Server } from 'node:http';
import { join } from 'node:path';
import { type Agent, isRoot, must, sh, Topo, until, waitPing } from '../helpers/topo.js';
import { EmbeddedKv } from '../../src/kv/embedded.js';

const skip = isRoot() ? false : 'needs root (network namespaces, TAP devices)';
let topo: Topo;
let host: { ns: string; addr: string };
let agent: Agent;
let engine: Server;
let pluginSock = '';
let engineSock = '';
/** What the fake dockerd knows: id -> network. */
const dockerNets = new Map<
  string,
  { Id: string; Name: string; Driver: string; Options?: Record<string, string>; Containers?: Record<string, unknown> }
>();
const created: Record<string, unknown>[] = [];
/** How often the plugin asked the fake dockerd for each network (GET /networks/ID). */
const asked = new Map<string, number>();
const asks = (nid: string) => asked.get(nid) ?? 0;

function fakeEngine(path: string): Promise<Server> {
  const srv = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = (req.url ?? '').replace(/^\/v[\d.]+/, '');
      const send = (status: number, body: unknown) => {
        res.writeHead(status, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify(body));
      };
      let m: RegExpExecArray | null;
      if (req.method === 'GET' && url === '/networks')
        return send(
          200,
          [...dockerNets.values()].map(({ Containers: _c, ...n }) => n),
        );
      if (req.method === 'GET' && (m = /^\/networks\/([^/?]+)$/.exec(url))) {
        asked.set(m[1], asks(m[1]) + 1);
        const n = dockerNets.get(m[1]) ?? [...dockerNets.values()].find((x) => x.Name === m![1]);
        return n ? send(200, { Containers: {}, ...n }) : send(404, { message: 'not found' });
      }
      if (req.method === 'POST' && url === '/networks/create') {
        created.push(JSON.parse(Buffer.concat(chunks).toString()));
        return send(201, { Id: 'x' });
      }
      if (req.method === 'GET' && url.startsWith('/containers/')) return send(404, { message: 'no such container' });
      send(404, { message: `fake engine: ${req.method} ${url}` });
    });
  });
  return new Promise((r) => srv.listen(path, () => r(srv)));
}

/** A plugin call as dockerd makes it: POST, Docker's Accept header, no Content-Type; raw body. */
function callRaw(
  method: string,
  body: string | undefined,
  httpMethod = 'POST',
): Promise<{ status: number; json: Record<string, any> }> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        socketPath: pluginSock,
        method: httpMethod,
        path: `/${method}`,
        headers: { Accept: 'application/vnd.docker.plugins.v1.2+json', Host: '' },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, json: JSON.parse(Buffer.concat(chunks).toString() || 'null') }),
        );
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

async function call(method: string, body?: unknown): Promise<Record<string, any>> {
  const r = await callRaw(method, body === undefined ? undefined : JSON.stringify(body));
  assert.equal(r.status, 200, `${method}: HTTP ${r.status} ${JSON.stringify(r.json)}`);
  return r.json;
}

async function startAgent(): Promise<void> {
  agent = await topo.agent(host, { extra: ['--docker', `unix://${engineSock}`, '--plugin-socket', pluginSock] });
}

const id = (s: string) => s.padEnd(64, '0');
const T = () => topo.tag;

const networks = async () => (await agent.call<{ name: string }[]>('GET', '/v1/networks')).map((n) => n.name);

before(async () => {
  if (skip) return;
  topo = new Topo();
  host = topo.host('h1');
  pluginSock = join(topo.dir, 'plugins/vxtap.sock');
  engineSock = join(topo.dir, 'docker.sock');
  engine = await fakeEngine(engineSock);
  await startAgent();
});

after(async () => {
  engine?.close();
  if (topo) await topo.cleanup();
});

test('handshake: Activate, capabilities and address spaces', { skip }, async () => {
  assert.deepEqual(await call('Plugin.Activate'), { Implements: ['NetworkDriver', 'IpamDriver'] });
  assert.deepEqual(await call('NetworkDriver.GetCapabilities'), { Scope: 'local', ConnectivityScope: 'global' });
  assert.deepEqual(await call('IpamDriver.GetCapabilities'), {
    RequiresMACAddress: false,
    RequiresRequestReplay: false,
  });
  assert.deepEqual(await call('IpamDriver.GetDefaultAddressSpaces'), {
    LocalDefaultAddressSpace: 'vxtap',
    GlobalDefaultAddressSpace: 'vxtap',
  });
});

test(
  'unreadable requests: empty body (a retry), bad JSON, wrong verb, unknown call: 4xx with the message, never 200 {}',
  { skip },
  async () => {
    for (const m of [
      'NetworkDriver.CreateNetwork',
      'NetworkDriver.Join',
      'IpamDriver.RequestAddress',
      'IpamDriver.RequestPool',
    ]) {
      const r = await callRaw(m, undefined);
      assert.equal(r.status, 400, m);
      assert.match(r.json.Err, /empty request body/);
      assert.equal(r.json.Error, r.json.Err, 'both fields, whichever dockerd reads');
    }
    let r = await callRaw('NetworkDriver.CreateEndpoint', '{"NetworkID": ');
    assert.equal(r.status, 400);
    assert.match(r.json.Err, /unreadable request body/);
    r = await callRaw('NetworkDriver.CreateEndpoint', '[1,2]');
    assert.equal(r.status, 400);
    assert.match(r.json.Err, /JSON object/);
    r = await callRaw('NetworkDriver.Frobnicate', '{}');
    assert.equal(r.status, 404);
    r = await callRaw('Plugin.Activate', undefined, 'GET');
    assert.equal(r.status, 405);
    // the agent is still fine
    assert.deepEqual(await call('Plugin.Activate'), { Implements: ['NetworkDriver', 'IpamDriver'] });
  },
);

test(
  'bad requests get an error that says what to fix: IPAM in "Error", the network driver in "Err"',
  { skip },
  async () => {
    let r = await call('IpamDriver.RequestPool', { AddressSpace: 'vxtap', Pool: '198.19.9.0/24', V6: true });
    assert.match(r.Error, /IPv6/);
    r = await call('IpamDriver.RequestPool', { AddressSpace: 'vxtap', Pool: '198.19.9.0/33' });
    assert.ok(r.Error, JSON.stringify(r));
    r = await call('IpamDriver.RequestPool', {
      AddressSpace: 'vxtap',
      Pool: '198.19.9.0/24',
      SubPool: '198.19.9.0/25',
    });
    assert.match(r.Error, /ip-range/);
    r = await call('IpamDriver.RequestAddress', { PoolID: 'nope', Address: '' });
    assert.match(r.Error, /unknown pool/);
    r = await call('NetworkDriver.CreateNetwork', {
      NetworkID: id('a1'),
      IPv4Data: [{ AddressSpace: 'LocalDefault', Pool: '172.30.0.0/16', Gateway: '172.30.0.1/16' }],
      Options: {},
    });
    assert.match(r.Err, /--ipam-driver vxtap/);
    r = await call('NetworkDriver.CreateNetwork', { NetworkID: id('a2'), IPv4Data: [], Options: {} });
    assert.match(r.Err, /exactly one IPv4 subnet/);
    r = await call('NetworkDriver.CreateNetwork', { IPv4Data: [{ AddressSpace: 'vxtap', Pool: '198.19.9.0/24' }] });
    assert.match(r.Err, /NetworkID must be/);
    r = await call('NetworkDriver.CreateNetwork', {
      NetworkID: '../../etc',
      IPv4Data: [{ AddressSpace: 'vxtap', Pool: '198.19.9.0/24' }],
    });
    assert.match(r.Err, /is not an ID/);
    r = await call('NetworkDriver.CreateNetwork', {
      NetworkID: id('a3'),
      IPv4Data: [{ AddressSpace: 'vxtap', Pool: '198.19.9.0/24' }],
      Options: { 'com.docker.network.generic': { 'vxtap.vni': 'many' } },
    });
    assert.match(r.Err, /vxtap\.vni=many/);
    r = await call('NetworkDriver.CreateEndpoint', {
      NetworkID: id('dead'),
      EndpointID: id('e0'),
      Interface: { Address: '198.19.9.2/24' },
    });
    assert.match(r.Err, /not a vxtap network here/);
    r = await call('NetworkDriver.Join', {
      NetworkID: id('dead'),
      EndpointID: id('e0'),
      SandboxKey: '/var/run/docker/netns/x',
    });
    assert.match(r.Err, /was not created/);
  },
);

/** The shared embedded store's entries under `prefix`, read as another agent would. */
async function kvList(prefix: string): Promise<{ key: string; value: string }[]> {
  const kv = new EmbeddedKv(join(topo.dir, 'store.db'));
  try {
    return (await kv.list(prefix)).entries;
  } finally {
    await kv.close();
  }
}

test(
  'no --subnet: RequestPool holds the next free block of the pool in the store; ReleasePool gives it back',
  { skip },
  async () => {
    const holds = async () => (await kvList('/vxtap/v1/subnets/')).map((e) => e.key.slice('/vxtap/v1/subnets/'.length));
    const a = await call('IpamDriver.RequestPool', { AddressSpace: 'vxtap', Pool: '', Options: {} });
    assert.equal(a.Error, undefined, JSON.stringify(a));
    assert.match(a.Pool, /^198\.19\.\d+\.0\/24$/, "a /24 of the agent's pool (198.19.0.0/16 in the tests)");
    // a second one at once is another block: the first is held
    const b = await call('IpamDriver.RequestPool', { AddressSpace: 'vxtap', Pool: '', Options: {} });
    assert.notEqual(b.Pool, a.Pool);
    assert.deepEqual((await holds()).sort(), [a.Pool, b.Pool].map((c: string) => c.replace('/', '_')).sort());
    // nor does a network created meanwhile elsewhere get it: the agent refuses the held subnet
    const clash = await agent
      .call('POST', '/v1/networks', { name: `${T()}-clash`, subnet: a.Pool })
      .catch((e: unknown) => e);
    assert.match((clash as Error).message, /overlaps .* \(held by .* for a network being created\)/);
    for (const p of [a, b]) assert.deepEqual(await call('IpamDriver.ReleasePool', { PoolID: p.PoolID }), {});
    assert.deepEqual(await holds(), [], 'released pools give their subnets back');
  },
);

let NID = '';
let POOL = '';
const NET = () => `${T()}-p`;

test(
  'network create: pool, gateway, CreateNetwork; the name comes from dockerd and the network lands in the store',
  { skip },
  async () => {
    const pool = await call('IpamDriver.RequestPool', {
      AddressSpace: 'vxtap',
      Pool: '198.19.5.0/24',
      SubPool: '',
      Options: {},
      V6: false,
    });
    assert.equal(pool.Pool, '198.19.5.0/24');
    POOL = pool.PoolID;
    const gw = await call('IpamDriver.RequestAddress', {
      PoolID: POOL,
      Address: '',
      Options: { RequestAddressType: 'com.docker.network.gateway' },
    });
    assert.equal(gw.Address, '198.19.5.1/24');
    NID = id('n1');
    const r = await call('NetworkDriver.CreateNetwork', {
      NetworkID: NID,
      Options: { 'com.docker.network.enable_ipv6': false, 'com.docker.network.generic': {} },
      IPv4Data: [{ AddressSpace: 'vxtap', Pool: '198.19.5.0/24', Gateway: '198.19.5.1/24', AuxAddresses: null }],
      IPv6Data: [],
    });
    assert.deepEqual(r, {});
    // dockerd stores the network after CreateNetwork returns; the plugin asks for its name until it is there, and
    // creates nothing before: wait until it has asked twice, then check that nothing was created
    const asked0 = asks(NID);
    assert.ok(await until(() => asks(NID) >= asked0 + 2, 10_000), 'the plugin asks dockerd for the name');
    assert.ok(!(await networks()).includes(NET()), 'nothing is created while dockerd does not know the network');
    dockerNets.set(NID, { Id: NID, Name: NET(), Driver: 'vxtap' });
    assert.ok(await until(async () => (await networks()).includes(NET()), 5000), 'bound and created in the store');
    // a network created directly in the store gets a Docker side: the plugin asks dockerd to create it
    await agent.call('POST', '/v1/networks', { name: `${T()}-cli`, subnet: '198.19.6.0/24' });
    assert.ok(await until(() => created.some((c) => c.Name === `${T()}-cli`), 10_000), JSON.stringify(created));
    const c = created.find((x) => x.Name === `${T()}-cli`) as {
      Driver: string;
      IPAM: { Driver: string; Config: { Subnet: string }[] };
      Options: Record<string, string>;
    };
    assert.equal(c.Driver, 'vxtap');
    assert.equal(c.IPAM.Driver, 'vxtap');
    assert.equal(c.IPAM.Config[0].Subnet, '198.19.6.0/24');
    assert.equal(c.Options['vxtap.network'], `${T()}-cli`);
    // ... and dockerd's CreateNetwork for it carries vxtap.network: bound at once, to the existing network
    const p2 = await call('IpamDriver.RequestPool', {
      AddressSpace: 'vxtap',
      Pool: '198.19.6.0/24',
      Options: { 'vxtap.network': `${T()}-cli` },
    });
    await call('IpamDriver.RequestAddress', {
      PoolID: p2.PoolID,
      Address: '198.19.6.1',
      Options: { RequestAddressType: 'com.docker.network.gateway' },
    });
    assert.deepEqual(
      await call('NetworkDriver.CreateNetwork', {
        NetworkID: id('n2'),
        Options: { 'com.docker.network.generic': { 'vxtap.network': `${T()}-cli` } },
        IPv4Data: [{ AddressSpace: 'vxtap', Pool: '198.19.6.0/24', Gateway: '198.19.6.1/24' }],
      }),
      {},
    );
    dockerNets.set(id('n2'), {
      Id: id('n2'),
      Name: `${T()}-cli`,
      Driver: 'vxtap',
      Options: { 'vxtap.network': `${T()}-cli` },
    });
    const wrong = await call('NetworkDriver.CreateNetwork', {
      NetworkID: id('n3'),
      Options: { 'com.docker.network.generic': { 'vxtap.network': `${T()}-cli` } },
      IPv4Data: [{ AddressSpace: 'vxtap', Pool: '198.19.7.0/24' }],
    });
    assert.match(wrong.Err, /exists with subnet 198\.19\.6\.0\/24/);
    // --internal travels through the store: every host's dockerd creates its side as internal
    assert.equal((c as { Internal?: boolean }).Internal, false);
    const inet = await agent.call<{ internal: boolean }>('POST', '/v1/networks', {
      name: `${T()}-int`,
      subnet: '198.19.8.0/24',
      internal: true,
    });
    assert.equal(inet.internal, true);
    assert.ok(await until(() => created.some((x) => x.Name === `${T()}-int`), 10_000), JSON.stringify(created));
    assert.equal(created.find((x) => x.Name === `${T()}-int`)!.Internal, true);
    const opts = (internal: boolean) => ({
      'com.docker.network.internal': internal,
      'com.docker.network.generic': { 'vxtap.network': `${T()}-cli` },
    });
    const p3 = await call('IpamDriver.RequestPool', {
      AddressSpace: 'vxtap',
      Pool: '198.19.6.0/24',
      Options: { 'vxtap.network': `${T()}-cli` },
    });
    const mixed = await call('NetworkDriver.CreateNetwork', {
      NetworkID: id('n4'),
      Options: opts(true),
      IPv4Data: [{ AddressSpace: 'vxtap', Pool: '198.19.6.0/24' }],
    });
    assert.match(mixed.Err, /exists without --internal; create it without --internal/);
    await call('IpamDriver.ReleasePool', { PoolID: p3.PoolID });
    await agent.call('DELETE', `/v1/networks/${T()}-int`);
  },
);

test(
  'docker run / rm: RequestAddress, CreateEndpoint, Join (TAP handed over), OperInfo, Leave, DeleteEndpoint, ReleaseAddress',
  { skip },
  async () => {
    const a = await call('IpamDriver.RequestAddress', { PoolID: POOL, Address: '', Options: {} });
    assert.equal(a.Address, '198.19.5.2/24');
    const EID = id('e1');
    const ce = await call('NetworkDriver.CreateEndpoint', {
      NetworkID: NID,
      EndpointID: EID,
      Interface: { Address: a.Address, AddressIPv6: '', MacAddress: '' },
      Options: {},
    });
    assert.deepEqual(ce, { Interface: { MacAddress: '02:76:c6:13:05:02' } });
    const sandbox = topo.ns('c1'); // stands in for the container's namespace
    const j = await call('NetworkDriver.Join', {
      NetworkID: NID,
      EndpointID: EID,
      SandboxKey: `/run/netns/${sandbox}`,
      Options: {},
    });
    assert.equal(j.InterfaceName.DstPrefix, 'eth');
    assert.match(j.InterfaceName.SrcName, /^vx[0-9a-f]{8}$/);
    assert.equal(j.Gateway, undefined, 'no gateway: Docker adds docker_gwbridge for outbound and -p');
    const link = JSON.parse(must(['ip', '-j', '-n', host.ns, 'link', 'show', j.InterfaceName.SrcName]))[0];
    assert.equal(link.address, '02:76:c6:13:05:02');
    assert.equal(link.mtu, 1450);
    const op = await call('NetworkDriver.EndpointOperInfo', { NetworkID: NID, EndpointID: EID });
    assert.deepEqual(op.Value, {
      network: NET(),
      ip: '198.19.5.2',
      mac: '02:76:c6:13:05:02',
      endpoint: `dk-${EID.slice(0, 12)}`,
    });
    assert.deepEqual(
      await call('NetworkDriver.ProgramExternalConnectivity', { NetworkID: NID, EndpointID: EID, Options: {} }),
      {},
    );
    const eps = await agent.call<{ name: string; ip: string }[]>('GET', '/v1/endpoints');
    assert.ok(eps.some((e) => e.ip === '198.19.5.2'));
    // Docker moves the TAP into the container and renames it; the agent keeps forwarding on the same fd
    must(['ip', '-n', host.ns, 'link', 'set', j.InterfaceName.SrcName, 'netns', sandbox, 'name', 'eth0']);
    must(['ip', '-n', sandbox, 'addr', 'add', a.Address, 'dev', 'eth0']);
    must(['ip', '-n', sandbox, 'link', 'set', 'eth0', 'up']);
    // ... and it does: a second endpoint on the network (the agent's own API) answers the moved, renamed one
    const peerNs = topo.ns('c1peer', { quiet: true });
    await agent.call('POST', '/v1/endpoints', { network: NET(), netns: peerNs, name: 'peer', ip: '198.19.5.9' });
    try {
      assert.ok(await waitPing(sandbox, '198.19.5.9'), 'forwarding through the TAP after Docker moved and renamed it');
      const me = (
        await agent.call<{ ip: string; tx_frames: number; rx_frames: number }[]>('GET', '/v1/endpoints')
      ).find((e) => e.ip === '198.19.5.2');
      assert.ok(me && me.tx_frames > 0 && me.rx_frames > 0, `the endpoint's counters moved: ${JSON.stringify(me)}`);
    } finally {
      await agent.call('DELETE', '/v1/endpoints/peer');
    }
    assert.deepEqual(await call('NetworkDriver.RevokeExternalConnectivity', { NetworkID: NID, EndpointID: EID }), {});
    assert.deepEqual(await call('NetworkDriver.Leave', { NetworkID: NID, EndpointID: EID }), {});
    assert.deepEqual(await call('NetworkDriver.DeleteEndpoint', { NetworkID: NID, EndpointID: EID }), {});
    assert.equal(sh(['ip', '-n', sandbox, 'link', 'show', 'eth0']).code, 1, 'the TAP is gone');
    assert.deepEqual(await call('NetworkDriver.DeleteEndpoint', { NetworkID: NID, EndpointID: EID }), {}, 'idempotent');
    assert.deepEqual(await call('IpamDriver.ReleaseAddress', { PoolID: POOL, Address: '198.19.5.2' }), {});
    const st = await agent.call<{ reservations: string[] }>('GET', '/v1/stats');
    assert.deepEqual(st.reservations, []);
  },
);

test(
  'dual stack (--ipv6): an IPv6 pool from --pool6, its gateway, CreateNetwork with IPv6Data, CreateEndpoint with AddressIPv6, IPv6 forwarding after Join',
  { skip },
  async () => {
    const p4 = await call('IpamDriver.RequestPool', { AddressSpace: 'vxtap', Pool: '198.19.12.0/24', V6: false });
    const p6 = await call('IpamDriver.RequestPool', { AddressSpace: 'vxtap', Pool: '', V6: true });
    assert.equal(p6.Pool, '2001:db8:ff00::/64', "the first /64 of the agent's --pool6");
    await call('IpamDriver.RequestAddress', {
      PoolID: p4.PoolID,
      Address: '',
      Options: { RequestAddressType: 'com.docker.network.gateway' },
    });
    const gw6 = await call('IpamDriver.RequestAddress', {
      PoolID: p6.PoolID,
      Address: '',
      Options: { RequestAddressType: 'com.docker.network.gateway' },
    });
    assert.equal(gw6.Address, '2001:db8:ff00::1/64');
    const nid = id('n6');
    assert.deepEqual(
      await call('NetworkDriver.CreateNetwork', {
        NetworkID: nid,
        Options: { 'com.docker.network.enable_ipv6': true, 'com.docker.network.generic': {} },
        IPv4Data: [{ AddressSpace: 'vxtap', Pool: '198.19.12.0/24', Gateway: '198.19.12.1/24' }],
        IPv6Data: [{ AddressSpace: 'vxtap', Pool: p6.Pool, Gateway: gw6.Address }],
      }),
      {},
    );
    const name = `${T()}-dual`;
    dockerNets.set(nid, { Id: nid, Name: name, Driver: 'vxtap' });
    assert.ok(await until(async () => (await networks()).includes(name), 10_000), 'bound and created in the store');
    const n = await agent.call<{ subnet6: string; gateway6: string }>('GET', `/v1/networks/${name}`);
    assert.deepEqual([n.subnet6, n.gateway6], ['2001:db8:ff00::/64', '2001:db8:ff00::1']);
    const a4 = await call('IpamDriver.RequestAddress', { PoolID: p4.PoolID, Address: '', Options: {} });
    const a6 = await call('IpamDriver.RequestAddress', { PoolID: p6.PoolID, Address: '', Options: {} });
    assert.equal(a6.Address, '2001:db8:ff00::2/64', 'the lowest free IPv6 address after the gateway');
    const fixed = await call('IpamDriver.RequestAddress', {
      PoolID: p6.PoolID,
      Address: '2001:db8:ff00::2',
      Options: {},
    });
    assert.match(fixed.Error, /IPv6 address 2001:db8:ff00::2 is already in use/, 'an address taken is refused');
    const eid = id('e6');
    await call('NetworkDriver.CreateEndpoint', {
      NetworkID: nid,
      EndpointID: eid,
      Interface: { Address: a4.Address, AddressIPv6: a6.Address, MacAddress: '' },
      Options: {},
    });
    const sandbox = topo.ns('c6');
    const j = await call('NetworkDriver.Join', {
      NetworkID: nid,
      EndpointID: eid,
      SandboxKey: `/run/netns/${sandbox}`,
      Options: {},
    });
    const me = (await agent.call<{ name: string; ip6?: string }[]>('GET', '/v1/endpoints')).find(
      (e) => e.name === `dk-${eid.slice(0, 12)}`,
    );
    assert.equal(
      me?.ip6,
      '2001:db8:ff00::2',
      `the endpoint took its IPv6 reservation over: ${JSON.stringify(me)} ${JSON.stringify(j)}`,
    );
    // as Docker does: the TAP into the container, renamed, with both addresses
    must(['ip', '-n', host.ns, 'link', 'set', j.InterfaceName.SrcName, 'netns', sandbox, 'name', 'eth0']);
    must(['ip', '-n', sandbox, 'addr', 'add', a4.Address, 'dev', 'eth0']);
    must(['ip', '-n', sandbox, '-6', 'addr', 'add', a6.Address, 'dev', 'eth0', 'nodad']);
    must(['ip', '-n', sandbox, 'link', 'set', 'eth0', 'up']);
    const peerNs = topo.ns('c6peer');
    const peer = await agent.call<{ ip6: string }>('POST', '/v1/endpoints', {
      network: name,
      netns: peerNs,
      name: 'peer6',
      ip: '198.19.12.9',
    });
    try {
      assert.equal(peer.ip6, '2001:db8:ff00::9');
      const ok = await until(
        () => sh(['ip', 'netns', 'exec', sandbox, 'ping', '-6', '-c', '1', '-W', '1', peer.ip6]).code === 0,
        10_000,
      );
      assert.ok(ok, 'IPv6 from the Docker endpoint to the peer');
    } finally {
      await agent.call('DELETE', '/v1/endpoints/peer6');
    }
    await call('NetworkDriver.Leave', { NetworkID: nid, EndpointID: eid });
    await call('NetworkDriver.DeleteEndpoint', { NetworkID: nid, EndpointID: eid });
    await call('IpamDriver.ReleaseAddress', { PoolID: p4.PoolID, Address: a4.Address.replace(/\/\d+$/, '') });
    await call('IpamDriver.ReleaseAddress', { PoolID: p6.PoolID, Address: a6.Address.replace(/\/\d+$/, '') });
    assert.deepEqual((await agent.call<{ reservations: string[] }>('GET', '/v1/stats')).reservations, []);
    // a dual-stack network made outside Docker gets a Docker side with IPv6 on and both subnets
    await agent.call('POST', '/v1/networks', {
      name: `${T()}-cli6`,
      subnet: '198.19.13.0/24',
      subnet6: '2001:db8:13::/64',
    });
    assert.ok(await until(() => created.some((c) => c.Name === `${T()}-cli6`), 10_000), JSON.stringify(created));
    const c = created.find((x) => x.Name === `${T()}-cli6`) as {
      EnableIPv6: boolean;
      IPAM: { Config: { Subnet: string; Gateway?: string }[] };
    };
    assert.equal(c.EnableIPv6, true);
    assert.deepEqual(c.IPAM.Config[1], { Subnet: '2001:db8:13::/64', Gateway: '2001:db8:13::1' });
    await agent.call('DELETE', `/v1/networks/${T()}-cli6`);
    await call('IpamDriver.ReleasePool', { PoolID: p4.PoolID });
    await call('IpamDriver.ReleasePool', { PoolID: p6.PoolID });
  },
);

test('IDs that are object prototype keys (__proto__, constructor) are IDs like any other', { skip }, async () => {
  for (const EID of ['__proto__', 'constructor']) {
    const unknown = await call('NetworkDriver.EndpointOperInfo', { NetworkID: NID, EndpointID: EID });
    assert.deepEqual(unknown, { Value: {} }, `${EID}: not an endpoint before it is created`);
    const a = await call('IpamDriver.RequestAddress', { PoolID: POOL, Address: '', Options: {} });
    await call('NetworkDriver.CreateEndpoint', {
      NetworkID: NID,
      EndpointID: EID,
      Interface: { Address: a.Address, AddressIPv6: '', MacAddress: '' },
      Options: {},
    });
    const op = await call('NetworkDriver.EndpointOperInfo', { NetworkID: NID, EndpointID: EID });
    assert.equal(op.Value.ip, a.Address.split('/')[0], `${EID}: its own record`);
    const other = await call('NetworkDriver.EndpointOperInfo', { NetworkID: NID, EndpointID: id('never') });
    assert.deepEqual(other, { Value: {} }, `${EID}: another ID still finds nothing`);
    assert.deepEqual(await call('NetworkDriver.DeleteEndpoint', { NetworkID: NID, EndpointID: EID }), {});
    await call('IpamDriver.ReleaseAddress', { PoolID: POOL, Address: a.Address.split('/')[0] });
    const gone = await call('NetworkDriver.EndpointOperInfo', { NetworkID: NID, EndpointID: EID });
    assert.deepEqual(gone, { Value: {} }, `${EID}: deleted`);
  }
});

test('rollback: Join fails -> DeleteEndpoint without Leave -> ReleaseAddress; nothing is left', { skip }, async () => {
  const a = await call('IpamDriver.RequestAddress', { PoolID: POOL, Address: '198.19.5.40', Options: {} });
  assert.equal(a.Address, '198.19.5.40/24');
  const dup = await call('IpamDriver.RequestAddress', { PoolID: POOL, Address: '198.19.5.40', Options: {} });
  assert.match(dup.Error, /already in use/);
  const EID = id('e2');
  await call('NetworkDriver.CreateEndpoint', {
    NetworkID: NID,
    EndpointID: EID,
    Interface: { Address: a.Address, MacAddress: '02:00:00:00:00:42' },
  });
  const bad = await call('NetworkDriver.Join', { NetworkID: NID, EndpointID: EID, SandboxKey: 'relative/path' });
  assert.match(bad.Err, /SandboxKey/);
  assert.deepEqual(await call('NetworkDriver.DeleteEndpoint', { NetworkID: NID, EndpointID: EID }), {});
  assert.deepEqual(await call('IpamDriver.ReleaseAddress', { PoolID: POOL, Address: '198.19.5.40' }), {});
  const st = await agent.call<{ reservations: string[]; endpoints: unknown[] }>('GET', '/v1/stats');
  assert.deepEqual(st.reservations, []);
  assert.equal(st.endpoints.length, 0);
});

test('concurrent address requests never collide', { skip }, async () => {
  const rs = await Promise.all(
    Array.from({ length: 12 }, () => call('IpamDriver.RequestAddress', { PoolID: POOL, Address: '', Options: {} })),
  );
  const addrs = rs.map((r) => r.Address as string);
  assert.ok(addrs.every(Boolean), JSON.stringify(rs));
  assert.equal(new Set(addrs).size, addrs.length, addrs.join(' '));
  await Promise.all(addrs.map((a) => call('IpamDriver.ReleaseAddress', { PoolID: POOL, Address: a })));
});

test('state survives an agent restart: Docker never replays CreateNetwork', { skip }, async () => {
  const a = await call('IpamDriver.RequestAddress', { PoolID: POOL, Address: '', Options: {} });
  await topo.stopAgent(agent);
  await startAgent();
  const b = await call('IpamDriver.RequestAddress', { PoolID: POOL, Address: '', Options: {} });
  assert.notEqual(a.Address, b.Address, 'the reservation made before the restart is still held');
  const EID = id('e3');
  assert.deepEqual(
    await call('NetworkDriver.CreateEndpoint', {
      NetworkID: NID,
      EndpointID: EID,
      Interface: { Address: b.Address, MacAddress: '' },
    }),
    {
      Interface: {
        MacAddress: '02:76:c6:13:05:' + Number(b.Address.split('.')[3].split('/')[0]).toString(16).padStart(2, '0'),
      },
    },
  );
  await call('NetworkDriver.DeleteEndpoint', { NetworkID: NID, EndpointID: EID });
  for (const x of [a, b]) await call('IpamDriver.ReleaseAddress', { PoolID: POOL, Address: x.Address });
});

test(
  'network rm: ReleaseAddress(gateway), ReleasePool, DeleteNetwork removes the unused network from the store',
  { skip },
  async () => {
    assert.deepEqual(await call('IpamDriver.ReleaseAddress', { PoolID: POOL, Address: '198.19.5.1' }), {});
    assert.deepEqual(await call('IpamDriver.ReleasePool', { PoolID: POOL }), {});
    assert.deepEqual(await call('NetworkDriver.DeleteNetwork', { NetworkID: NID }), {});
    dockerNets.delete(NID);
    assert.ok(await until(async () => !(await networks()).includes(NET()), 5000));
    assert.deepEqual(await call('NetworkDriver.DeleteNetwork', { NetworkID: NID }), {}, 'idempotent');
  },
);
