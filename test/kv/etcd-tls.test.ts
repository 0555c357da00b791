/**
 * etcd with TLS (client certificates) and user/password authentication, as a real deployment that keeps network
 * keys in the store runs it (issue 27): certificates made here with openssl, etcd on loopback. The agent's store
 * client connects with the right CA, certificate and password; a wrong CA or a wrong password is a clear error
 * (ERR_KV_AUTH, and the agent refuses to start saying what to check), never an endless "unavailable".
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import { freePort, startEtcd, type EtcdServer } from '../helpers/etcd.js';
import { openKv } from '../../src/kv/open.js';
import { KvError } from '../../src/kv/kv.js';
import { Agent } from '../../src/agent/agent.js';

let dir = '';
let etcd: EtcdServer;
const f = (n: string) => join(dir, n);

/** A CA, and a certificate it signs for `cn` (with 127.0.0.1 as its address). */
function ca(name: string): void {
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-days',
      '1',
      '-subj',
      `/CN=${name}`,
      '-keyout',
      f(`${name}.key`),
      '-out',
      f(`${name}.crt`),
    ],
    { stdio: 'ignore' },
  );
}
function cert(name: string, by: string, usage: string): void {
  writeFileSync(f(`${name}.ext`), `subjectAltName=IP:127.0.0.1\nextendedKeyUsage=${usage}\n`);
  execFileSync(
    'openssl',
    [
      'req',
      '-newkey',
      'rsa:2048',
      '-nodes',
      '-subj',
      `/CN=${name}`,
      '-keyout',
      f(`${name}.key`),
      '-out',
      f(`${name}.csr`),
    ],
    { stdio: 'ignore' },
  );
  execFileSync(
    'openssl',
    [
      'x509',
      '-req',
      '-in',
      f(`${name}.csr`),
      '-CA',
      f(`${by}.crt`),
      '-CAkey',
      f(`${by}.key`),
      '-CAcreateserial',
      '-days',
      '1',
      '-extfile',
      f(`${name}.ext`),
      '-out',
      f(`${name}.crt`),
    ],
    { stdio: 'ignore' },
  );
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'vxt-tls-'));
  ca('ca');
  ca('otherca');
  cert('server', 'ca', 'serverAuth');
  cert('root', 'ca', 'clientAuth'); // the CN is the etcd user a certificate alone authenticates as
  cert('agent', 'ca', 'clientAuth');
  writeFileSync(f('pw'), 'agent-secret\n');
  writeFileSync(f('badpw'), 'guess\n');
  etcd = await startEtcd(undefined, { cert: f('server.crt'), key: f('server.key'), ca: f('ca.crt') });
  // users and roles, then auth on (as an operator would with etcdctl); root is needed before auth is enabled
  const admin = new Etcd3({
    hosts: `https://${etcd.endpoint}`,
    credentials: {
      rootCertificate: Buffer.from(execFileSync('cat', [f('ca.crt')])),
      certChain: Buffer.from(execFileSync('cat', [f('root.crt')])),
      privateKey: Buffer.from(execFileSync('cat', [f('root.key')])),
    },
  });
  await admin.user('root').create('root-secret');
  await admin.user('root').addRole('root');
  await admin.role('vxtap').create();
  await admin.role('vxtap').grant({ permission: 'Readwrite', range: admin.range({ prefix: '/' }) });
  await admin.user('vxtap-agent').create('agent-secret');
  await admin.user('vxtap-agent').addRole('vxtap');
  await admin.auth.authEnable({});
  admin.close();
});

after(async () => {
  await etcd?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const security = (o: { ca?: string; pw?: string } = {}) => ({
  ca: f(o.ca ?? 'ca.crt'),
  cert: f('agent.crt'),
  key: f('agent.key'),
  user: 'vxtap-agent',
  passwordFile: f(o.pw ?? 'pw'),
});

test('TLS with a client certificate and a password: the store client works, its watch thread too', async () => {
  const kv = await openKv(`etcd://${etcd.endpoint}`, security());
  try {
    await kv.put('/vxtap/v1/tls-check', 'ok');
    assert.equal((await kv.get('/vxtap/v1/tls-check'))?.value, 'ok');
    assert.match(kv.where, /\(TLS\)/);
    // watches run on their own thread with its own client: the same certificate and password must reach it
    const seen: string[] = [];
    const errors: string[] = [];
    const w = kv.watch('/vxtap/v1/tls-watch/', (await kv.list('/vxtap/v1/tls-watch/')).revision, {
      events: (evs) => seen.push(...evs.map((e) => e.key)),
      error: (e) => errors.push(`${e.code} ${e.message}`),
    });
    await kv.put('/vxtap/v1/tls-watch/a', '1');
    for (let i = 0; i < 250 && !seen.length; i++) await new Promise((r) => setTimeout(r, 20));
    w.close();
    assert.deepEqual(seen, ['/vxtap/v1/tls-watch/a'], `watch errors: ${errors.join('; ')}`);
  } finally {
    await kv.close();
  }
});

test("a wrong password is ERR_KV_AUTH; a CA that did not sign etcd's certificate is found by diagnose()", async () => {
  const bad = await openKv(`etcd://${etcd.endpoint}`, security({ pw: 'badpw' }));
  try {
    const e = await bad.get('/vxtap/v1/tls-check').then(
      () => null,
      (x: unknown) => x,
    );
    assert.ok(e instanceof KvError, String(e));
    assert.equal(e.code, 'ERR_KV_AUTH', e.message);
    assert.match(e.message, /refused the user or password/);
  } finally {
    await bad.close();
  }
  const wrongCa = await openKv(`etcd://${etcd.endpoint}`, security({ ca: 'otherca.crt' }));
  try {
    // gRPC says only "no connection established"; the handshake itself says why
    await assert.rejects(wrongCa.get('/vxtap/v1/tls-check'));
    const why = await wrongCa.diagnose!();
    assert.match(String(why), /certificate/i);
    console.log(`# wrong CA: ${why}`);
  } finally {
    await wrongCa.close();
  }
  const good = await openKv(`etcd://${etcd.endpoint}`, security());
  try {
    assert.equal(await good.diagnose!(), null, 'nothing to say when TLS works');
  } finally {
    await good.close();
  }
});

test('the agent refuses to start with a wrong password or CA, saying what to check', async () => {
  for (const [o, what] of [
    [{ pw: 'badpw' }, /refused the user or password.*--kv-user\/--kv-password-file/s],
    [{ ca: 'otherca.crt' }, /TLS with the store at .* failed: .*certificate.*check --kv-ca/s],
  ] as const) {
    const e = await Agent.start({
      vtep: '127.0.0.1',
      port: await freePort(), // UDP: a TCP port free now is very likely free for UDP too
      host: 'tls-h1',
      kv: `etcd://${etcd.endpoint}`,
      kvSecurity: security(o),
      stateDir: join(dir, 'state'),
    }).then(
      async (a) => (await a.close(), null),
      (x: Error) => x,
    );
    assert.ok(e, `it did not start with ${JSON.stringify(o)}`);
    assert.match(e.message, what);
  }
});

test('misused flags are refused before anything is opened', async () => {
  await assert.rejects(
    openKv(`etcd://${etcd.endpoint}`, { cert: f('agent.crt') }),
    /--kv-cert and --kv-key go together/,
  );
  await assert.rejects(
    openKv(`etcd://${etcd.endpoint}`, { user: 'x' }),
    /--kv-user and --kv-password-file go together/,
  );
  await assert.rejects(openKv(join(dir, 'store.db'), { ca: f('ca.crt') }), /are for etcd/);
  await assert.rejects(openKv(`etcd://${etcd.endpoint}`, { ca: f('missing.crt') }), /--kv-ca .*missing\.crt/);
});
