#!/usr/bin/env -S node --no-memory-reducer
/**
 * The `vxtap` command. `vxtap agent` runs the agent in the foreground; every other command talks to a running
 * agent over its control socket (--socket, or $VXTAP_SOCKET, default /run/vxtap/vxtap.sock).
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { Agent, DEFAULT_STATE_DIR } from '../agent/agent.js';
import { call, DEFAULT_SOCKET } from '../agent/client.js';
import { serveControl } from '../agent/control.js';
import { localAsker } from '../agent/dnsaccess.js';
import { formatIpv4 } from '../vxlan/ipv4.js';
// Loaded only when asked for (--metrics, --docker, --dns), and the etcd client only for --kv etcd://: an agent
// restarted after a crash forwards again sooner (bench/results/history.md entry 21)
import type { DockerPlugin } from '../plugin/plugin.js';
import { createLogger, type Level } from '../common/log.js';
import { DEFAULT_KV_PATH } from '../kv/open.js';

class UsageError extends Error {}

const USAGE = `vxtap: userspace VXLAN overlay agent

Usage:
  vxtap agent --vtep IP|IPv6 [--kv etcd://H:P[,H:P]|FILE] [--host NAME] [--port 4789] [--lease-ttl 10]
              [--state-dir /var/lib/vxtap] [--metrics [HOST]:PORT] [--no-offload] [--tx-sockets 4] [--batch 64]
              [--busy-poll MICROSECONDS] [--no-io-uring] [--storm-pps 2000] [--pool 10.0.0.0/8 [--pool-prefix 24]]
              [--pool6 fd76:7874:6170::/48]
              [--kv-ca FILE [--kv-cert FILE --kv-key FILE]] [--kv-user NAME --kv-password-file FILE] [--insecure-kv]
              [--log-level info] [--docker unix:///var/run/docker.sock [--plugin-socket PATH]]
              [--dns IP[:53] [--dns-upstream IP[:PORT],...|none]]
  vxtap network create NAME [--subnet CIDR (default: the next free block of the agent's --pool)] [--vni N] [--mtu 1450 (1430 on an IPv6 underlay)] [--gateway IP|none] [--no-learning] [--internal] [--allow-tagged]
                       [--ipv6] [--subnet6 CIDR (dual stack; default with --ipv6: a /64 of --pool6)] [--gateway6 IP|none]
                       [--encrypted [--key-rotation 12h (s, m, h or d)]]   (MTU default 28 less when encrypted)
  vxtap network ls [-o json]
  vxtap network inspect NAME
  vxtap network rm NAME
  vxtap endpoint attach NETWORK --netns NS [--name NAME] [--ip IP] [--ip6 IP] [--mac MAC] [--ifname eth0] [--no-default-route]
  vxtap endpoint detach NAME
  vxtap endpoint ls [-o json]
  vxtap fdb add NETWORK MAC DST        (DST: IP[:PORT] or [IPv6]:PORT; MAC 00:00:00:00:00:00 adds DST to the flood list)
  vxtap fdb del NETWORK MAC [DST]
  vxtap fdb show [NETWORK] [-o json]
  vxtap stats [-o json]
  vxtap bench [--quick] [--reps N] [--time S] [--paths direct,kernel,tinc,openvpn,floor,floor-busy,vxtap,vxtap-busy,kernel-v6,vxtap-v6] [--out DIR]
              [--busy-window US]
              side-by-side forwarding benchmark in fresh namespaces (root; see bench/forwarding.ts)

Every command but agent takes --socket PATH (default $VXTAP_SOCKET or ${DEFAULT_SOCKET}).
The agent shares networks, hosts and endpoints through the KV store: etcd across machines, or the embedded
single-file store (default ${DEFAULT_KV_PATH}) that every agent on one machine opens.
`;

type Opts = Record<string, string | boolean | undefined>;

function parse(argv: string[], options: ParseArgsConfig['options']): { opts: Opts; pos: string[] } {
  try {
    const { values, positionals } = parseArgs({
      args: argv,
      options: {
        socket: { type: 'string' },
        output: { type: 'string', short: 'o' },
        help: { type: 'boolean', short: 'h' },
        ...options,
      },
      allowPositionals: true,
      strict: true,
    });
    return { opts: values as Opts, pos: positionals };
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

function socketOf(o: Opts): string {
  return (o.socket as string | undefined) ?? process.env.VXTAP_SOCKET ?? DEFAULT_SOCKET;
}

/** A duration: seconds, or a number with s, m, h or d. */
function duration(v: string): number {
  const m = /^(\d+)([smhd]?)$/.exec(v);
  if (!m) throw new UsageError(`--key-rotation ${JSON.stringify(v)}: a duration such as 3600, 90s, 30m, 12h or 7d`);
  return Number(m[1]) * { '': 1, s: 1, m: 60, h: 3600, d: 86400 }[m[2] as '' | 's' | 'm' | 'h' | 'd'];
}

function int(o: Opts, k: string): number | undefined {
  const v = o[k];
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n)) throw new UsageError(`--${k} must be an integer, got ${JSON.stringify(v)}`);
  return n;
}

function need(pos: string[], i: number, what: string): string {
  const v = pos[i];
  if (v === undefined) throw new UsageError(`missing ${what}`);
  return v;
}

function table(rows: Record<string, unknown>[], cols: string[]): string {
  const cells = [
    cols.map((c) => c.toUpperCase()),
    ...rows.map((r) => cols.map((c) => (r[c] === null || r[c] === undefined ? '-' : String(r[c])))),
  ];
  const w = cols.map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  return cells
    .map((r) =>
      r
        .map((c, i) => c.padEnd(w[i]))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

function print(o: Opts, value: unknown, cols?: string[]): void {
  if (o.output === 'json' || !cols || !Array.isArray(value)) console.log(JSON.stringify(value, null, 2));
  else console.log(table(value as Record<string, unknown>[], cols));
}

/**
 * V8's memory reducer runs up to three full mark-compacts some seconds after allocation slows down, i.e. when a
 * burst of traffic ends: for a packet forwarder, stalls of the data plane of milliseconds just as traffic turns
 * latency-sensitive (docs/architecture.md, "No memory reducer"). The agent allocates almost nothing
 * per packet and its heap stays small, so it has nothing to reduce. V8 reads the flag when it creates the heap:
 * it must be on node's command line (this file's #! line has it); v8.setFlagsFromString at run time is too late.
 */
const NO_MEMORY_REDUCER = '--no-memory-reducer';

async function agentCmd(argv: string[]): Promise<void> {
  const { opts } = parse(argv, {
    vtep: { type: 'string' },
    port: { type: 'string' },
    host: { type: 'string' },
    'tx-sockets': { type: 'string' },
    batch: { type: 'string' },
    'busy-poll': { type: 'string' },
    'storm-pps': { type: 'string' },
    pool: { type: 'string' },
    'pool-prefix': { type: 'string' },
    pool6: { type: 'string' },
    'kv-ca': { type: 'string' },
    'kv-cert': { type: 'string' },
    'kv-key': { type: 'string' },
    'kv-user': { type: 'string' },
    'kv-password-file': { type: 'string' },
    'no-io-uring': { type: 'boolean' },
    'insecure-kv': { type: 'boolean' },
    kv: { type: 'string' },
    'lease-ttl': { type: 'string' },
    'state-dir': { type: 'string' },
    metrics: { type: 'string' },
    'no-offload': { type: 'boolean' },
    'log-level': { type: 'string' },
    docker: { type: 'string' },
    'plugin-socket': { type: 'string' },
    dns: { type: 'string' },
    'dns-upstream': { type: 'string' },
  });
  if (!opts.vtep)
    throw new UsageError(
      'agent needs --vtep IP: the underlay address (IPv4 or IPv6) of this host that peers send VXLAN to',
    );
  const level = (opts['log-level'] as Level | undefined) ?? 'info';
  if (!['debug', 'info', 'warn', 'error'].includes(level))
    throw new UsageError('--log-level: debug, info, warn or error');
  const log = createLogger({ level });
  if (!process.execArgv.includes(NO_MEMORY_REDUCER)) {
    log.warn(
      `node was started without ${NO_MEMORY_REDUCER}: expect 5-20 ms data-plane stalls (full garbage collections) some seconds after each burst of traffic; run the agent as \`vxtap agent\` or \`node ${NO_MEMORY_REDUCER} .../main.js agent\``,
    );
  }
  const agent = await Agent.start({
    vtep: opts.vtep as string,
    port: int(opts, 'port'),
    host: opts.host as string | undefined,
    txSockets: int(opts, 'tx-sockets'),
    batch: int(opts, 'batch'),
    busyPollUs: int(opts, 'busy-poll'),
    stormPps: int(opts, 'storm-pps'),
    pool: opts.pool as string | undefined,
    pool6: opts.pool6 as string | undefined,
    poolPrefix: int(opts, 'pool-prefix'),
    ioUring: !opts['no-io-uring'],
    kv: opts.kv as string | undefined,
    kvSecurity: {
      ca: opts['kv-ca'] as string | undefined,
      cert: opts['kv-cert'] as string | undefined,
      key: opts['kv-key'] as string | undefined,
      user: opts['kv-user'] as string | undefined,
      passwordFile: opts['kv-password-file'] as string | undefined,
    },
    insecureKv: opts['insecure-kv'] === true,
    leaseTtl: int(opts, 'lease-ttl'),
    stateDir: opts['state-dir'] as string | undefined,
    offload: !opts['no-offload'],
    log,
  });
  const path = socketOf(opts);
  const closers: (() => void)[] = [];
  const closeAll = async (): Promise<void> => {
    for (const c of closers.reverse()) c();
    await agent.close();
  };
  try {
    if (opts.metrics) {
      const { serveMetrics } = await import('../agent/metrics.js');
      const metrics = await serveMetrics(agent, opts.metrics as string);
      closers.push(() => metrics.close());
      log.info('metrics ready', { listen: opts.metrics, path: '/metrics' });
    }
    let plugin: DockerPlugin | undefined;
    if (opts.docker) {
      const { DockerPlugin } = await import('../plugin/plugin.js');
      const { DEFAULT_PLUGIN_SOCKET, servePlugin } = await import('../plugin/server.js');
      plugin = new DockerPlugin(
        agent,
        opts.docker as string,
        (opts['state-dir'] as string | undefined) ?? DEFAULT_STATE_DIR,
        log,
      );
      const sock = (opts['plugin-socket'] as string | undefined) ?? DEFAULT_PLUGIN_SOCKET;
      const srv = await servePlugin(plugin, sock, log);
      closers.push(() => srv.close());
      closers.push(() => plugin?.close());
      plugin.start();
      log.info('docker plugin ready', { socket: sock, docker: opts.docker });
    } else if (opts['plugin-socket'])
      throw new UsageError('--plugin-socket needs --docker (the local dockerd API address)');
    if (opts.dns) {
      let listen: { ip: string; port: number };
      try {
        listen = (await import('../agent/dns.js')).parseHostPort(opts.dns as string);
      } catch {
        throw new UsageError(
          `--dns ${opts.dns}: give IPv4[:port]${String(opts.vtep).includes(':') ? '' : `, e.g. the VTEP address: --dns ${opts.vtep}`}`,
        );
      }
      const p = plugin;
      const { DnsServer } = await import('../agent/dns.js');
      const dns = new DnsServer({
        address: listen.ip,
        port: listen.port,
        upstream: opts['dns-upstream'] ? (opts['dns-upstream'] as string).split(',') : undefined,
        named: (n, label) => agent.reconciler.state.named(n, label),
        networks: () => agent.reconciler.state.networks.keys(),
        scope: p ? (ip) => p.networksOf(ip) : undefined,
        allowed: localAsker({
          endpointAddrs: () =>
            [...agent.endpoints.values()].flatMap((e) => [formatIpv4(e.ip), ...(e.rec.ip6 ? [e.rec.ip6] : [])]),
          container: p ? (ip) => p.isContainer(ip) : undefined,
        }),
        log,
      });
      await dns.start();
      closers.push(() => dns.close());
      agent.dnsStats = dns.stats;
      log.info('DNS ready', { listen: opts.dns });
    } else if (opts['dns-upstream']) throw new UsageError('--dns-upstream needs --dns');
    // last: a control socket that answers means everything asked for is up
    const server = await serveControl(agent, path, log);
    closers.push(() => server.close());
    log.info('control socket ready', { socket: path });
  } catch (e) {
    await closeAll();
    throw e;
  }
  let stopping = false;
  const stop = async (sig: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info('stopping', { signal: sig });
    await closeAll();
    process.exit(0);
  };
  process.on('SIGINT', () => void stop('SIGINT'));
  process.on('SIGTERM', () => void stop('SIGTERM'));
  // the store is lost for good (its file deleted or replaced): exit non-zero, so a supervisor restarts the agent
  // and it opens the store the other agents will open too; its endpoints survive the restart
  agent.onFatal = (err) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`vxtap: ${err.message} [${(err as { code?: string }).code ?? 'ERR_KV_FATAL'}]\n`);
    void closeAll().finally(() => process.exit(1));
  };
}

async function networkCmd(argv: string[]): Promise<void> {
  const sub = argv[0];
  const rest = argv.slice(1);
  if (sub === 'create') {
    const { opts, pos } = parse(rest, {
      vni: { type: 'string' },
      subnet: { type: 'string' },
      mtu: { type: 'string' },
      gateway: { type: 'string' },
      'no-learning': { type: 'boolean' },
      internal: { type: 'boolean' },
      'allow-tagged': { type: 'boolean' },
      ipv6: { type: 'boolean' },
      subnet6: { type: 'string' },
      gateway6: { type: 'string' },
      encrypted: { type: 'boolean' },
      'key-rotation': { type: 'string' },
    });
    const name = need(pos, 0, 'network NAME');
    const vni = int(opts, 'vni');
    const body: Record<string, unknown> = {
      name,
      vni,
      ...(opts.subnet ? { subnet: opts.subnet } : {}),
      mtu: int(opts, 'mtu'),
      learning: !opts['no-learning'],
      ...(opts.internal ? { internal: true } : {}),
      ...(opts['allow-tagged'] ? { allowTagged: true } : {}),
      ...(opts.ipv6 ? { ipv6: true } : {}),
      ...(opts.subnet6 ? { subnet6: opts.subnet6 } : {}),
      ...(opts.encrypted ? { encrypted: true } : {}),
      ...(opts['key-rotation'] !== undefined ? { keyRotationSec: duration(opts['key-rotation'] as string) } : {}),
    };
    if (opts.gateway !== undefined) body.gateway = opts.gateway === 'none' ? null : opts.gateway;
    if (opts.gateway6 !== undefined) body.gateway6 = opts.gateway6 === 'none' ? null : opts.gateway6;
    const n = await call<Record<string, unknown>>(socketOf(opts), 'POST', '/v1/networks', body);
    const v6 = n.subnet6 ? `, IPv6 subnet ${n.subnet6}, gateway ${n.gateway6 ?? 'none'}` : '';
    const enc = n.encrypted ? `, encrypted (keys rotate every ${n.keyRotationSec} s)` : '';
    console.log(
      `network ${n.name} created: VNI ${n.vni}, subnet ${n.subnet}, gateway ${n.gateway ?? 'none'}${v6}, MTU ${n.mtu}${enc}`,
    );
  } else if (sub === 'ls') {
    const { opts } = parse(rest, {});
    const nets = await call<Record<string, unknown>[]>(socketOf(opts), 'GET', '/v1/networks');
    print(
      opts,
      nets.map((n) => ({ ...n, endpoints: (n.endpoints as unknown[]).length })),
      ['name', 'vni', 'subnet', 'gateway', 'subnet6', 'mtu', 'encrypted', 'endpoints'],
    );
  } else if (sub === 'inspect') {
    const { opts, pos } = parse(rest, {});
    print(opts, await call(socketOf(opts), 'GET', `/v1/networks/${encodeURIComponent(need(pos, 0, 'network NAME'))}`));
  } else if (sub === 'rm') {
    const { opts, pos } = parse(rest, {});
    const name = need(pos, 0, 'network NAME');
    await call(socketOf(opts), 'DELETE', `/v1/networks/${encodeURIComponent(name)}`);
    console.log(`network ${name} removed`);
  } else throw new UsageError(`unknown network command ${JSON.stringify(sub ?? '')}: create, ls, inspect, rm`);
}

async function endpointCmd(argv: string[]): Promise<void> {
  const sub = argv[0];
  const rest = argv.slice(1);
  if (sub === 'attach') {
    const { opts, pos } = parse(rest, {
      netns: { type: 'string' },
      name: { type: 'string' },
      ip: { type: 'string' },
      ip6: { type: 'string' },
      mac: { type: 'string' },
      ifname: { type: 'string' },
      'no-default-route': { type: 'boolean' },
    });
    const network = need(pos, 0, 'NETWORK');
    if (!opts.netns) throw new UsageError('endpoint attach needs --netns NS (a name from `ip netns list` or a path)');
    const e = await call<Record<string, unknown>>(socketOf(opts), 'POST', '/v1/endpoints', {
      network,
      netns: opts.netns,
      name: opts.name,
      ip: opts.ip,
      ip6: opts.ip6,
      mac: opts.mac,
      ifname: opts.ifname,
      defaultRoute: opts['no-default-route'] ? false : undefined,
    });
    console.log(
      `endpoint ${e.name} attached: ${e.ifname} in ${e.netns}, ${e.ip}${e.ip6 ? `, ${e.ip6}` : ''}, ${e.mac}`,
    );
  } else if (sub === 'detach') {
    const { opts, pos } = parse(rest, {});
    const name = need(pos, 0, 'endpoint NAME');
    await call(socketOf(opts), 'DELETE', `/v1/endpoints/${encodeURIComponent(name)}`);
    console.log(`endpoint ${name} detached`);
  } else if (sub === 'ls') {
    const { opts } = parse(rest, {});
    print(opts, await call(socketOf(opts), 'GET', '/v1/endpoints'), [
      'name',
      'network',
      'netns',
      'ifname',
      'ip',
      'mac',
      'host',
    ]);
  } else throw new UsageError(`unknown endpoint command ${JSON.stringify(sub ?? '')}: attach, detach, ls`);
}

async function fdbCmd(argv: string[]): Promise<void> {
  const sub = argv[0];
  const { opts, pos } = parse(argv.slice(1), {});
  const s = socketOf(opts);
  if (sub === 'add') {
    await call(s, 'POST', '/v1/fdb', {
      network: need(pos, 0, 'NETWORK'),
      mac: need(pos, 1, 'MAC'),
      dst: need(pos, 2, 'DST VTEP'),
    });
    console.log('fdb entry added');
  } else if (sub === 'del') {
    await call(s, 'DELETE', '/v1/fdb', { network: need(pos, 0, 'NETWORK'), mac: need(pos, 1, 'MAC'), dst: pos[2] });
    console.log('fdb entry deleted');
  } else if (sub === 'show') {
    const q = pos[0] ? `?network=${encodeURIComponent(pos[0])}` : '';
    print(opts, await call(s, 'GET', `/v1/fdb${q}`), ['network', 'vni', 'mac', 'kind', 'dst', 'ageMs']);
  } else throw new UsageError(`unknown fdb command ${JSON.stringify(sub ?? '')}: add, del, show`);
}

async function statsCmd(argv: string[]): Promise<void> {
  const { opts } = parse(argv, {});
  const st = await call<Record<string, unknown>>(socketOf(opts), 'GET', '/v1/stats');
  if (opts.output === 'json') {
    print(opts, st);
    return;
  }
  const c = st.counters as Record<string, number>;
  const drops = Object.entries(st.drops as Record<string, number>).filter(([, n]) => n > 0);
  console.log(`host ${st.host}  vtep ${st.vtep}`);
  console.log(
    `tx: ${c.tx_packets} frames ${c.tx_bytes} bytes -> ${c.tx_udp_datagrams} datagrams, ${c.tx_local_frames} local`,
  );
  console.log(`rx: ${c.rx_datagrams} datagrams ${c.rx_bytes} bytes -> ${c.rx_frames} frames`);
  if (st.offload) {
    console.log(
      `offload: tx ${c.tx_gso_frames} TSO frames -> ${c.tx_gso_segments} segments in ${c.tx_gso_sends} GSO sends; rx ${c.rx_gro_buffers} GRO buffers, ${c.rx_gro_segments} segments merged into ${c.rx_gro_frames} frames (${c.rx_gro_udp_frames} of them UDP)`,
    );
  } else console.log('offload: off (--no-offload)');
  console.log(
    `learned ${c.learned}, moved ${c.moved}, arp answered ${c.arp_suppressed}; fdb ${JSON.stringify(st.fdb)}`,
  );
  console.log(drops.length ? `drops: ${drops.map(([k, n]) => `${k}=${n}`).join(' ')}` : 'drops: none');
}

/** Runs bench/forwarding.js with the same arguments (it validates them), inheriting the terminal. */
async function benchCmd(argv: string[]): Promise<void> {
  const { spawn } = await import('node:child_process');
  const { fileURLToPath } = await import('node:url');
  const script = fileURLToPath(new URL('../../bench/forwarding.js', import.meta.url));
  const code = await new Promise<number>((resolve) =>
    spawn(process.execPath, [script, ...argv], { stdio: 'inherit' }).once('exit', (c) => resolve(c ?? 1)),
  );
  if (code !== 0) process.exit(code);
}

/**
 * The options every command takes (--socket, -o/--output) may also come before the command
 * (`vxtap --socket S network ls`): they are moved after it, where the command's parser reads them.
 */
function hoistGlobals(argv: string[]): string[] {
  const lead: string[] = [];
  let i = 0;
  for (; i < argv.length && argv[i].startsWith('-') && argv[i] !== '-h' && argv[i] !== '--help'; i++) {
    const a = argv[i];
    if (/^--(socket|output)=/.test(a)) lead.push(a);
    else if (a === '--socket' || a === '--output' || a === '-o') {
      if (i + 1 >= argv.length) throw new UsageError(`${a} needs a value`);
      lead.push(a, argv[++i]);
    } else throw new UsageError(`${a} is not an option of every command; give it after the command`);
  }
  return i < argv.length ? [...argv.slice(i), ...lead] : [];
}

async function main(args: string[]): Promise<void> {
  const argv = hoistGlobals(args);
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '-h' || cmd === '--help' || cmd === 'help' || rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(USAGE);
    return;
  }
  switch (cmd) {
    case 'agent':
      return agentCmd(rest);
    case 'network':
      return networkCmd(rest);
    case 'endpoint':
      return endpointCmd(rest);
    case 'fdb':
      return fdbCmd(rest);
    case 'stats':
      return statsCmd(rest);
    case 'bench':
      return benchCmd(rest);
    default:
      throw new UsageError(`unknown command ${JSON.stringify(cmd)}`);
  }
}

main(process.argv.slice(2)).catch((e: unknown) => {
  if (e instanceof UsageError) {
    process.stderr.write(`vxtap: ${e.message}\n\n${USAGE}`);
    process.exit(2);
  }
  const code = (e as { code?: string }).code;
  process.stderr.write(`vxtap: ${(e as Error).message ?? String(e)}${code ? ` [${code}]` : ''}\n`);
  process.exit(1);
});
