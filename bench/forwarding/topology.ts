/**
 * The benchmark's paths: for each, two "hosts" (network namespaces) joined by a direct veth underlay (MTU 1500,
 * 198.18.0.1/.2, and 2001:db8:18::1/::2 for the -v6 paths) and one "container" per host (MTU 1450, 1430 over an
 * IPv6 underlay; 198.19.1.1/.2), then the overlay under test between them.
 * The underlay is a plain veth pair, not the test suite's bridge (test/helpers/topo.ts): the anchors in
 * shared/docs/anchors.md and every row since were measured on this one, and a bridge adds a hop to every path.
 * Names carry a per-run tag (vxb<pid><n>-...); teardown() ends the processes a path started, by PID, and deletes
 * its namespaces.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { must, sh, sleep } from '../../test/helpers/topo.js';

export const ROOT = resolve(fileURLToPath(import.meta.url), '../../../..');
const CLI = join(ROOT, 'dist/src/cli/main.js');

export interface Topo {
  tag: string;
  dir: string;
  c1: string;
  c2: string;
  procs: ChildProcess[];
  /** PIDs whose CPU time counts as the overlay's. */
  cpuPids: number[];
  /** A routed path (WireGuard is L3): the interface c2's frames go to first, [netns, dev] (its MAC is the 60 B
   * frames' destination). Absent: the path is L2, frames go straight to c1's MAC. */
  c2NextHop?: [string, string];
}

let seq = 0;
/** Container MTU: a 1500-byte underlay minus VXLAN's 50 bytes over IPv4, 70 over IPv6. */
const mtuOf = (v6: boolean): string => (v6 ? '1430' : '1450');
const v6addr = (i: number): string => `2001:db8:18::${i}`;

export function baseTopo(withHosts: boolean, v6 = false): Topo {
  const tag = `vxb${process.pid % 10000}${seq++}`;
  const t: Topo = {
    tag,
    dir: mkdtempSync(join(tmpdir(), `${tag}-`)),
    c1: `${tag}-c1`,
    c2: `${tag}-c2`,
    procs: [],
    cpuPids: [],
  };
  const nss = withHosts ? ['h1', 'h2', 'c1', 'c2'] : ['c1', 'c2'];
  for (const n of nss) {
    must(['ip', 'netns', 'add', `${tag}-${n}`]);
    must(['ip', '-n', `${tag}-${n}`, 'link', 'set', 'lo', 'up']);
    if (n.startsWith('c'))
      for (const k of ['all', 'default'])
        must(['ip', 'netns', 'exec', `${tag}-${n}`, 'sysctl', '-qw', `net.ipv6.conf.${k}.disable_ipv6=1`]);
  }
  if (withHosts) {
    must([
      'ip',
      'link',
      'add',
      `${tag}u1`,
      'netns',
      `${tag}-h1`,
      'type',
      'veth',
      'peer',
      'name',
      `${tag}u2`,
      'netns',
      `${tag}-h2`,
    ]);
    for (const i of [1, 2]) {
      must(['ip', '-n', `${tag}-h${i}`, 'addr', 'add', `198.18.0.${i}/24`, 'dev', `${tag}u${i}`]);
      if (v6) must(['ip', '-n', `${tag}-h${i}`, 'addr', 'add', `${v6addr(i)}/64`, 'dev', `${tag}u${i}`, 'nodad']);
      must(['ip', '-n', `${tag}-h${i}`, 'link', 'set', `${tag}u${i}`, 'up']);
    }
  }
  return t;
}

function containerAddr(t: Topo, i: 1 | 2, dev: string, v6 = false): void {
  const c = i === 1 ? t.c1 : t.c2;
  must(['ip', '-n', c, 'link', 'set', dev, 'mtu', mtuOf(v6), 'up']);
  must(['ip', '-n', c, 'addr', 'add', `198.19.1.${i}/24`, 'dev', dev]);
}

/** veth from host i's bridge br0 to container i's eth0. */
function bridgeToContainer(t: Topo, i: 1 | 2, v6 = false): void {
  const h = `${t.tag}-h${i}`;
  const c = i === 1 ? t.c1 : t.c2;
  must(['ip', '-n', h, 'link', 'add', 'br0', 'type', 'bridge']);
  must(['ip', '-n', h, 'link', 'add', 'k0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', c]);
  must(['ip', '-n', h, 'link', 'set', 'k0', 'master', 'br0', 'mtu', mtuOf(v6), 'up']);
  must(['ip', '-n', h, 'link', 'set', 'br0', 'up']);
  containerAddr(t, i, 'eth0', v6);
}

async function waitFile(path: string, ms = 15_000): Promise<void> {
  const end = Date.now() + ms;
  while (!existsSync(path)) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${path}`);
    await sleep(50);
  }
}

/** One vxtap agent per host on a shared embedded store; `extra`: more agent flags; `v6`: IPv6 VTEPs (the network
 * then gets the agent's default MTU for that underlay, 1430). */
async function vxtapPath(extra: string[], v6 = false, netArgs: string[] = []): Promise<Topo> {
  const t = baseTopo(true, v6);
  for (const i of [1, 2]) {
    const sock = join(t.dir, `h${i}.sock`);
    const p = spawn(
      'sh',
      [
        '-c',
        `exec ip netns exec ${t.tag}-h${i} node --no-memory-reducer ${CLI} agent --vtep ${v6 ? v6addr(i) : `198.18.0.${i}`} --host h${i} --socket ${sock} --kv ${join(t.dir, 'store.db')} --state-dir ${join(t.dir, 'state')} --log-level warn ${extra.join(' ')} 2>>${join(t.dir, `h${i}.log`)}`,
      ],
      { stdio: 'ignore' },
    );
    t.procs.push(p);
    t.cpuPids.push(p.pid!);
    await waitFile(sock);
  }
  const v = (i: number, args: string[]) => must(['node', CLI, ...args, '--socket', join(t.dir, `h${i}.sock`)]);
  await sleep(300);
  v(1, ['network', 'create', 'bench', '--subnet', '198.19.1.0/24', '--gateway', 'none', ...netArgs]);
  await sleep(100);
  v(1, ['endpoint', 'attach', 'bench', '--netns', t.c1, '--name', 'c1', '--ip', '198.19.1.1']);
  v(2, ['endpoint', 'attach', 'bench', '--netns', t.c2, '--name', 'c2', '--ip', '198.19.1.2']);
  return t;
}

/** Compiles bench/NAME.c once per run (into a temporary directory removed at exit); returns the binary. */
const toolBins = new Map<string, string>();
export function buildTool(name: 'floor' | 'pinger'): string {
  const have = toolBins.get(name);
  if (have) return have;
  const dir = mkdtempSync(join(tmpdir(), `vxtap-${name}-`));
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  const bin = join(dir, name);
  const r = sh(['cc', '-O2', '-Wall', '-o', bin, join(ROOT, `bench/${name}.c`)]);
  if (r.code !== 0)
    throw new Error(
      `cannot build bench/${name}.c with cc (the C compiler the native addon needs): ${(r.stderr || r.stdout).trim().slice(-300)}`,
    );
  toolBins.set(name, bin);
  return bin;
}

/** The C floor forwarder on each host (bench/floor.c), sleeping in poll() or, with `spin`, never sleeping. */
async function floorPath(spin: boolean): Promise<Topo> {
  const bin = buildTool('floor');
  const t = baseTopo(true);
  for (const i of [1, 2] as const) {
    const log = join(t.dir, `floor${i}.log`);
    const p = spawn(
      'sh',
      [
        '-c',
        `exec ip netns exec ${t.tag}-h${i} ${bin}${spin ? ' --spin' : ''} tap0 198.18.0.${i} 198.18.0.${3 - i} 2>>${log}`,
      ],
      { stdio: 'ignore' },
    );
    t.procs.push(p);
    t.cpuPids.push(p.pid!);
    const end = Date.now() + 5000;
    while (!readFileSync(log, { encoding: 'utf8', flag: 'a+' }).includes('ready')) {
      if (p.exitCode !== null || Date.now() > end)
        throw new Error(`floor forwarder on h${i} did not start: ${readFileSync(log, 'utf8').trim()}`);
      await sleep(20);
    }
    // the TAP moves into the container, as vxtap's do; the forwarder keeps its fd
    must(['ip', '-n', `${t.tag}-h${i}`, 'link', 'set', 'tap0', 'netns', i === 1 ? t.c1 : t.c2, 'name', 'eth0']);
    containerAddr(t, i, 'eth0');
  }
  return t;
}

/** The kernel's VXLAN device in a bridge on each host, over the IPv4 or (v6) the IPv6 underlay. */
async function kernelPath(v6: boolean): Promise<Topo> {
  const t = baseTopo(true, v6);
  for (const i of [1, 2] as const) {
    const h = `${t.tag}-h${i}`;
    const [me, peer] = v6 ? [v6addr(i), v6addr(3 - i)] : [`198.18.0.${i}`, `198.18.0.${3 - i}`];
    must([
      'ip',
      '-n',
      h,
      'link',
      'add',
      'vxlan0',
      'type',
      'vxlan',
      'id',
      '42',
      'dstport',
      '4789',
      'local',
      me,
      'dev',
      `${t.tag}u${i}`,
    ]);
    must(['bridge', '-n', h, 'fdb', 'append', '00:00:00:00:00:00', 'dev', 'vxlan0', 'dst', peer]);
    bridgeToContainer(t, i, v6);
    must(['ip', '-n', h, 'link', 'set', 'vxlan0', 'master', 'br0', 'up']);
  }
  return t;
}

/** The paths, each a topology builder; `busyUs` is the vxtap-busy row's --busy-poll window. */
export function pathBuilders(busyUs: number): Record<string, () => Promise<Topo>> {
  return {
    async direct() {
      const t = baseTopo(false);
      must(['ip', 'link', 'add', 'eth0', 'netns', t.c1, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', t.c2]);
      containerAddr(t, 1, 'eth0');
      containerAddr(t, 2, 'eth0');
      return t;
    },
    kernel: () => kernelPath(false),
    'kernel-v6': () => kernelPath(true),
    vxtap: () => vxtapPath([]),
    'vxtap-v6': () => vxtapPath([], true),
    'vxtap-busy': () => vxtapPath(['--busy-poll', String(busyUs)]),
    // an encrypted network (AES-256-GCM; the agent gives it MTU 1422: 28 bytes of crypto header and tag)
    'vxtap-enc': () => vxtapPath([], false, ['--encrypted']),
    wireguard: () => wireguardPath(),
    'tinc-enc': () => tincPath(true),
    'openvpn-enc': () => openvpnPath(true),
    floor: () => floorPath(false),
    'floor-busy': () => floorPath(true),
    tinc: () => tincPath(false),
    openvpn: () => openvpnPath(false),
  };
}

/** tinc 1.0 in switch mode: no cipher, or (enc) AES-256-CBC with HMAC-SHA256, the strongest tinc 1.0 offers (it has
 * no AEAD). */
async function tincPath(enc: boolean): Promise<Topo> {
  const t = baseTopo(true);
  for (const i of [1, 2] as const) {
    const d = join(t.dir, `tinc${i}`);
    mkdirSync(join(d, 'hosts'), { recursive: true });
    writeFileSync(
      join(d, 'tinc.conf'),
      `Name = h${i}\nMode = switch\nInterface = tap0\nDeviceType = tap\nAddressFamily = ipv4\nBindToAddress = 198.18.0.${i}\n${i === 2 ? 'ConnectTo = h1\n' : ''}`,
    );
    writeFileSync(join(d, 'tinc-up'), '#!/bin/sh\nip link set $INTERFACE up\n', { mode: 0o755 });
  }
  for (const i of [1, 2] as const) {
    // keys, then each host's file with its address and its cipher
    must([
      'sh',
      '-c',
      `printf '\\n\\n' | ip netns exec ${t.tag}-h${i} tincd -c ${join(t.dir, `tinc${i}`)} -K4096 >/dev/null 2>&1`,
    ]);
  }
  for (const i of [1, 2] as const) {
    const pub = readFileSync(join(t.dir, `tinc${i}`, 'hosts', `h${i}`), 'utf8');
    const crypto = enc ? 'Cipher = aes-256-cbc\nDigest = sha256\n' : 'Cipher = none\nDigest = none\n';
    const body = `Address = 198.18.0.${i}\n${crypto}Compression = 0\n${pub}`;
    for (const j of [1, 2]) writeFileSync(join(t.dir, `tinc${j}`, 'hosts', `h${i}`), body);
  }
  for (const i of [1, 2] as const) {
    const p = spawn(
      'ip',
      [
        'netns',
        'exec',
        `${t.tag}-h${i}`,
        'tincd',
        '-D',
        '-c',
        join(t.dir, `tinc${i}`),
        '--pidfile',
        join(t.dir, `tinc${i}.pid`),
      ],
      { stdio: 'ignore' },
    );
    t.procs.push(p);
    t.cpuPids.push(p.pid!);
  }
  await sleep(1500);
  for (const i of [1, 2] as const) {
    bridgeToContainer(t, i);
    must(['ip', '-n', `${t.tag}-h${i}`, 'link', 'set', 'tap0', 'master', 'br0', 'mtu', '1450', 'up']);
  }
  return t;
}

/** OpenVPN 2.6 TAP bridged: no crypto, or (enc) AES-256-GCM data channel keyed by TLS (certificates made here). */
async function openvpnPath(enc: boolean): Promise<Topo> {
  const t = baseTopo(true);
  const pki = enc ? makePki(t.dir) : null;
  for (const i of [1, 2] as const) {
    const h = `${t.tag}-h${i}`;
    const crypto = pki
      ? [
          i === 1 ? '--tls-server' : '--tls-client',
          ...(i === 1 ? ['--dh', 'none'] : []),
          '--ca',
          pki.ca,
          '--cert',
          pki.cert[i],
          '--key',
          pki.key[i],
          '--data-ciphers',
          'AES-256-GCM',
          '--cipher',
          'AES-256-GCM',
          '--verify-x509-name',
          i === 1 ? 'h2' : 'h1',
          'name',
        ]
      : ['--cipher', 'none', '--auth', 'none', '--data-ciphers', 'none'];
    must(['ip', '-n', h, 'tuntap', 'add', 'dev', 'tap0', 'mode', 'tap']);
    const p = spawn(
      'ip',
      [
        'netns',
        'exec',
        h,
        'openvpn',
        '--dev',
        'tap0',
        '--dev-type',
        'tap',
        '--proto',
        'udp',
        '--local',
        `198.18.0.${i}`,
        '--remote',
        `198.18.0.${3 - i}`,
        '--port',
        '1194',
        ...crypto,
        '--tun-mtu',
        '1500',
        '--mssfix',
        '0',
        '--sndbuf',
        '4194304',
        '--rcvbuf',
        '4194304',
        '--verb',
        '0',
      ],
      { stdio: 'ignore' },
    );
    t.procs.push(p);
    t.cpuPids.push(p.pid!);
  }
  await sleep(enc ? 3000 : 1500);
  for (const i of [1, 2] as const) {
    bridgeToContainer(t, i);
    must(['ip', '-n', `${t.tag}-h${i}`, 'link', 'set', 'tap0', 'master', 'br0', 'up']);
  }
  return t;
}

/** A CA and a certificate for each OpenVPN peer (EC P-256), made with openssl in the run's directory. */
function makePki(dir: string): { ca: string; cert: Record<number, string>; key: Record<number, string> } {
  const f = (n: string) => join(dir, n);
  const o = (args: string[]) => must(['openssl', ...args]);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  o(['req', '-x509', ...ec, '-keyout', f('ca.key'), '-out', f('ca.pem'), '-days', '1', '-subj', '/CN=vxtap-bench-ca']);
  const cert: Record<number, string> = {};
  const key: Record<number, string> = {};
  for (const i of [1, 2]) {
    o(['req', ...ec, '-keyout', f(`h${i}.key`), '-out', f(`h${i}.csr`), '-subj', `/CN=h${i}`]);
    writeFileSync(
      f(`h${i}.ext`),
      `extendedKeyUsage = ${i === 1 ? 'serverAuth' : 'clientAuth'}\nkeyUsage = digitalSignature\n`,
    );
    o([
      'x509',
      '-req',
      '-in',
      f(`h${i}.csr`),
      '-CA',
      f('ca.pem'),
      '-CAkey',
      f('ca.key'),
      '-CAcreateserial',
      '-out',
      f(`h${i}.pem`),
      '-days',
      '1',
      '-extfile',
      f(`h${i}.ext`),
    ]);
    cert[i] = f(`h${i}.pem`);
    key[i] = f(`h${i}.key`);
  }
  return { ca: f('ca.pem'), cert, key };
}

/**
 * wireguard-go (the Go userspace WireGuard, ChaCha20-Poly1305) between the hosts: a routed tunnel, as WireGuard is
 * L3. Each container keeps its /24 address; its host answers ARP for the other container (proxy ARP) and routes it
 * into wg0. Container MTU 1420, wg0's default (WireGuard's 60 bytes over IPv4 plus room for IPv6).
 */
async function wireguardPath(): Promise<Topo> {
  const t = baseTopo(true);
  try {
    return await wireguardUp(t);
  } catch (e) {
    await teardown(t);
    throw e;
  }
}

/** wireguard-go's control sockets are named by interface in /var/run/wireguard, shared by every namespace: each
 * host's interface has its own name. */
async function wireguardUp(t: Topo): Promise<Topo> {
  const wg = (i: number): string => `${t.tag}w${i}`; // the run's tag: no clash with a wg0 of the machine's
  const keys = [1, 2].map(() => {
    const priv = must(['wg', 'genkey']).trim();
    const pub = must(['sh', '-c', `echo ${priv} | wg pubkey`]).trim();
    return { priv, pub };
  });
  for (const i of [1, 2] as const) {
    const h = `${t.tag}-h${i}`;
    const log = join(t.dir, `wg${i}.log`);
    const p = spawn('sh', ['-c', `exec ip netns exec ${h} wireguard-go -f ${wg(i)} >>${log} 2>&1`], {
      stdio: 'ignore',
    });
    t.procs.push(p);
    t.cpuPids.push(p.pid!);
  }
  for (const i of [1, 2] as const) {
    const h = `${t.tag}-h${i}`;
    const end = Date.now() + 5000;
    while (sh(['ip', '-n', h, 'link', 'show', wg(i)]).code !== 0) {
      if (Date.now() > end)
        throw new Error(`wireguard-go on h${i} made no ${wg(i)}: ${readFileSync(join(t.dir, `wg${i}.log`), 'utf8')}`);
      await sleep(50);
    }
    const kf = join(t.dir, `wg${i}.key`);
    writeFileSync(kf, keys[i - 1].priv, { mode: 0o600 });
    must([
      'ip',
      'netns',
      'exec',
      h,
      'wg',
      'set',
      wg(i),
      'private-key',
      kf,
      'listen-port',
      '51820',
      'peer',
      keys[2 - i].pub,
      'endpoint',
      `198.18.0.${3 - i}:51820`,
      'allowed-ips',
      `198.19.1.${3 - i}/32`,
    ]);
    must(['ip', '-n', h, 'link', 'set', wg(i), 'up']);
    const c = i === 1 ? t.c1 : t.c2;
    must(['ip', '-n', h, 'link', 'add', 'k0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', c]);
    must(['ip', '-n', h, 'link', 'set', 'k0', 'mtu', '1420', 'up']);
    must(['ip', 'netns', 'exec', h, 'sysctl', '-qw', 'net.ipv4.ip_forward=1', 'net.ipv4.conf.k0.proxy_arp=1']);
    must(['ip', '-n', h, 'route', 'add', `198.19.1.${3 - i}/32`, 'dev', wg(i)]);
    must(['ip', '-n', h, 'route', 'add', `198.19.1.${i}/32`, 'dev', 'k0']);
    must(['ip', '-n', c, 'link', 'set', 'eth0', 'mtu', '1420', 'up']);
    must(['ip', '-n', c, 'addr', 'add', `198.19.1.${i}/24`, 'dev', 'eth0']);
  }
  t.c2NextHop = [`${t.tag}-h2`, 'k0'];
  return t;
}

export async function teardown(t: Topo): Promise<void> {
  for (const p of t.procs)
    if (p.exitCode === null && p.pid)
      try {
        process.kill(p.pid, 'SIGTERM');
      } catch {
        /* gone */
      }
  await Promise.all(
    t.procs.map((p) =>
      p.exitCode !== null
        ? Promise.resolve(null)
        : new Promise((r) => {
            const k = setTimeout(() => {
              try {
                process.kill(p.pid!, 'SIGKILL');
              } catch {
                /* gone */
              }
            }, 3000);
            p.once('exit', () => {
              clearTimeout(k);
              r(null);
            });
          }),
    ),
  );
  for (const n of ['c1', 'c2', 'h1', 'h2']) sh(['ip', 'netns', 'del', `${t.tag}-${n}`]);
  rmSync(t.dir, { recursive: true, force: true });
}
