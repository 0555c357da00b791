/**
 * Real dockerd daemons for tests, one per test "host" namespace, following ../shared/docs/docker-plugin.md:
 * each daemon runs in the host's network namespace and in a private mount namespace (so it gets its own sysfs,
 * cgroup mounts and plugin directory), with its own data root, exec root and API socket, and an address pool
 * inside 198.18.0.0/15. The vxtap agent for that host runs in the same two namespaces, as it would on a real
 * host, so the plugin socket (/run/docker/plugins/vxtap.sock) and Docker's sandbox paths mean the same to both.
 *
 * Everything is tagged with the topology's tag and stopped by PID; cgroups the daemon made are removed.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { agentArgs, agentHandle, CLI, must, safeKill, sh, sleep, type Agent, type Topo } from './topo.js';

export const DOCKER = existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';
const CONTROLLERS = ['cpu', 'cpuacct', 'cpuset', 'memory', 'devices', 'freezer', 'blkio', 'pids'];

export function haveDockerd(): boolean {
  return sh(['dockerd', '--version']).code === 0;
}

export interface Dockerd {
  name: string;
  dir: string;
  /** `unix://...` API address, usable from any mount namespace. */
  host: string;
  /** The persistent mount namespace (a bind-mounted nsfs file) that dockerd and the agent share. */
  mntns: string;
  proc: ChildProcess;
  cgroupParent: string;
  argv: string[];
  /** Runs the docker CLI against this daemon; never throws. */
  docker(args: string[], timeoutMs?: number): { code: number; stdout: string; stderr: string };
  /** Runs the docker CLI and returns stdout, throwing with stderr on failure. */
  must(args: string[], timeoutMs?: number): string;
}

/**
 * Starts dockerd in `hostNs`. `pool` is the --default-address-pool base (a /18 inside 198.18.0.0/15), `dns` the
 * external DNS servers given to containers (the vxtap agent's resolver).
 *
 * The daemon's mount namespace is made once and kept (bind-mounted on a file), so a restarted dockerd and the
 * agent see the same mounts, as they do on a real host.
 */
export async function startDockerd(
  topo: Topo,
  hostNs: string,
  opts: { pool: string; dns?: string[] },
): Promise<Dockerd> {
  const dir = join(topo.dir, `docker-${hostNs}`);
  for (const d of ['plugins', 'root', 'exec', 'ns']) mkdirSync(join(dir, d), { recursive: true });
  const cgroupParent = `/${hostNs}-docker`;
  const mntns = join(dir, 'ns/mnt');
  const setup = join(dir, 'setup.sh');
  const remounts = CONTROLLERS.map(
    (c) => `mkdir -p /sys/fs/cgroup/${c} && mount -t cgroup -o ${c} cgroup /sys/fs/cgroup/${c}`,
  ).join('\n');
  writeFileSync(
    setup,
    `set -e
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /sys/fs/cgroup
${remounts}
mkdir -p /sys/fs/cgroup/systemd && mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified
mkdir -p /run/docker/plugins
mount --bind ${dir}/plugins /run/docker/plugins
`,
  );
  must(['mount', '--bind', join(dir, 'ns'), join(dir, 'ns')]);
  must(['mount', '--make-private', join(dir, 'ns')]);
  writeFileSync(mntns, '');
  must([
    'nsenter',
    `--net=/run/netns/${hostNs}`,
    'unshare',
    `--mount=${mntns}`,
    '--propagation',
    'private',
    'sh',
    setup,
  ]);
  const host = `unix://${dir}/docker.sock`;
  const argv = [
    'dockerd',
    '--data-root',
    `${dir}/root`,
    '--exec-root',
    `${dir}/exec`,
    '--pidfile',
    `${dir}/docker.pid`,
    '-H',
    host,
    '--storage-driver=vfs',
    '--bridge=none',
    '--iptables=true',
    '--ip-masq=false',
    '--default-address-pool',
    `base=${opts.pool},size=24`,
    `--cgroup-parent=${cgroupParent}`,
    ...(opts.dns ?? []).flatMap((d) => ['--dns', d]),
    '--log-level=info',
  ];
  const d: Dockerd = {
    name: hostNs,
    dir,
    host,
    mntns,
    proc: null as unknown as ChildProcess,
    cgroupParent,
    argv,
    docker: (args, t = 60_000) => sh([DOCKER, '-H', host, ...args], t),
    must: (args, t = 60_000) => must([DOCKER, '-H', host, ...args], t),
  };
  topo.onCleanup(
    async () => {
      await stopDockerd(d);
      unmountNs(d);
    },
    () => {
      stopDockerdSync(d);
      unmountNs(d);
    },
  );
  await launchDockerd(topo, d);
  return d;
}

/** (Re)starts the daemon process in its namespaces and waits for its API. */
export async function launchDockerd(topo: Topo, d: Dockerd): Promise<void> {
  const log = join(d.dir, 'dockerd.log');
  const cmd = ['nsenter', `--net=/run/netns/${d.name}`, `--mount=${d.mntns}`, ...d.argv].join(' ');
  d.proc = spawn('sh', ['-c', `exec ${cmd} >>${log} 2>&1`], { stdio: 'ignore' });
  topo.own(d.proc);
  const deadline = Date.now() + 60_000;
  while (d.docker(['version', '--format', '{{.Server.Version}}'], 5000).code !== 0) {
    if (d.proc.exitCode !== null || Date.now() > deadline) {
      const text = existsSync(log)
        ? readFileSync(log, 'utf8')
            .split('\n')
            .filter((l) => !l.includes('[core]'))
            .join('\n')
            .slice(-3000)
        : '(no log)';
      throw new Error(`dockerd in ${d.name} did not start (exit ${d.proc.exitCode}): ${text}`);
    }
    await sleep(200);
  }
}

function unmountNs(d: Dockerd): void {
  sh(['umount', d.mntns]);
  sh(['umount', join(d.dir, 'ns')]);
}

/** Stops the daemon's containers and the daemon (SIGTERM by PID, SIGKILL after 20 s), and removes its cgroups. */
export async function stopDockerd(d: Dockerd): Promise<void> {
  if (d.proc.exitCode === null && d.proc.signalCode === null && d.proc.pid) {
    const ids = d.docker(['ps', '-aq'], 20_000).stdout.split('\n').filter(Boolean);
    if (ids.length) d.docker(['rm', '-f', ...ids], 60_000);
    const done = new Promise((r) => d.proc.once('exit', r));
    try {
      process.kill(d.proc.pid, 'SIGTERM');
    } catch {
      /* gone */
    }
    const t = setTimeout(() => d.proc.pid && safeKill(d.proc.pid, 'SIGKILL'), 20_000);
    await done;
    clearTimeout(t);
  }
  for (const pid of leftovers(d)) safeKill(pid, 'SIGKILL');
  await sleep(200);
  removeCgroups(d.cgroupParent);
}

/** A clean dockerd restart: SIGTERM (dockerd stops its containers, calling the plugin), wait, start again. */
export async function restartDockerd(topo: Topo, d: Dockerd): Promise<void> {
  const done = new Promise((r) => d.proc.once('exit', r));
  if (d.proc.pid) process.kill(d.proc.pid, 'SIGTERM');
  await done;
  await launchDockerd(topo, d);
}

/** stopDockerd for process exit (a failed or interrupted test): the same steps, waiting synchronously. */
function stopDockerdSync(d: Dockerd): void {
  const pid = d.proc.pid;
  if (d.proc.exitCode === null && d.proc.signalCode === null && pid) {
    const ids = d.docker(['ps', '-aq'], 20_000).stdout.split('\n').filter(Boolean);
    if (ids.length) d.docker(['rm', '-f', ...ids], 60_000);
    try {
      process.kill(pid, 'SIGTERM');
      const until = Date.now() + 20_000;
      while (Date.now() < until && alive(pid)) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
    } catch {
      /* gone */
    }
    safeKill(pid, 'SIGKILL');
  }
  for (const p of leftovers(d)) safeKill(p, 'SIGKILL');
  removeCgroups(d.cgroupParent);
}

/** SIGKILLs the daemon and the containerd it supervises (a crash; an unclean restart follows). The containers'
 * shims keep running. The containerd usually dies with dockerd (parent-death signal), but not always: a restarted
 * dockerd that finds the old containerd's PID alive waits on it and gives up. */
export async function killDockerd(d: Dockerd): Promise<void> {
  const pidFile = join(d.dir, 'exec/containerd/containerd.pid');
  const pid = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8').trim()) : 0;
  const done = new Promise((r) => d.proc.once('exit', r));
  if (d.proc.pid) safeKill(d.proc.pid, 'SIGKILL');
  await done;
  if (pid > 0 && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(d.dir)) safeKill(pid, 'SIGKILL'); // ours: its config is in our dir
  const until = Date.now() + 15_000;
  while (pid > 0 && alive(pid) && Date.now() < until) await sleep(100);
  // dead, but maybe not yet reaped (this machine's init reaps orphans late): dockerd would take the zombie for a
  // running containerd, so remove its stale pid file as a service manager's restart would find it gone
  if (pid > 0 && !alive(pid)) rmSync(pidFile, { force: true });
}

/**
 * Processes of this daemon that outlive it when it could not stop its containers (it died first): containerd
 * shims started for its socket, and anything left in its cgroups. Identified by our run's unique directory and
 * cgroup names; killed by PID.
 */
function leftovers(d: Dockerd): number[] {
  const pids = new Set<number>();
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const cmd = readFileSync(`/proc/${e}/cmdline`, 'utf8');
      if (cmd.startsWith('/usr/bin/containerd-shim') && cmd.includes(`${d.dir}/exec/containerd/containerd.sock`))
        pids.add(Number(e));
    } catch {
      /* gone */
    }
  }
  const procs = join('/sys/fs/cgroup/pids', d.cgroupParent);
  const walk = (p: string): void => {
    if (!existsSync(p)) return;
    for (const l of readFileSync(join(p, 'cgroup.procs'), 'utf8').split('\n')) if (l) pids.add(Number(l));
    for (const e of readdirSync(p, { withFileTypes: true })) if (e.isDirectory()) walk(join(p, e.name));
  };
  try {
    walk(procs);
  } catch {
    /* best effort */
  }
  return [...pids];
}

/** True while the process exists and is not a zombie (nobody reaps it during process exit). */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

function removeCgroups(parent: string): void {
  for (const c of [...CONTROLLERS, 'systemd', 'unified']) {
    const base = join('/sys/fs/cgroup', c, parent);
    if (!existsSync(base)) continue;
    const rm = (p: string): void => {
      for (const e of readdirSync(p, { withFileTypes: true })) if (e.isDirectory()) rm(join(p, e.name));
      try {
        rmdirSync(p);
      } catch {
        /* still has tasks: the daemon's cleanup will get it */
      }
    };
    rm(base);
  }
}

/**
 * Starts the vxtap agent for a host inside its dockerd's network and mount namespaces, with the Docker plugin
 * enabled and the DNS resolver on `dnsAddr`.
 */
export async function startPluginAgent(
  topo: Topo,
  d: Dockerd,
  host: { ns: string; addr: string },
  kv: string,
  extra: string[] = [],
): Promise<Agent> {
  const socket = join(topo.dir, `${host.ns}.sock`);
  const logFile = join(topo.dir, `${host.ns}.log`);
  const argv = agentArgs(topo.dir, host, kv, [
    '--docker',
    d.host,
    '--dns',
    `${host.addr}:53`,
    '--dns-upstream',
    'none',
    '--lease-ttl',
    '3',
    ...extra,
  ]);
  const proc = spawn(
    'sh',
    [
      '-c',
      `exec nsenter --net=/run/netns/${host.ns} --mount=${d.mntns} node --no-memory-reducer ${CLI} ${argv.join(' ')} 2>>${logFile} >>${logFile}`,
    ],
    { stdio: 'ignore' },
  );
  topo.own(proc);
  return agentHandle(host.ns, socket, proc, logFile, () => existsSync(join(d.dir, 'plugins/vxtap.sock')));
}

/** A busybox image built with `docker import` (no registry here): sh, ping, wget, nc, httpd, nslookup.
 * (Debian's busybox 1.35 wget crashes on -T: bound it with `timeout` instead.) */
export function importBusybox(topo: Topo, d: Dockerd, tag: string): void {
  const tar = join(topo.dir, 'busybox.tar');
  if (!existsSync(tar)) {
    const root = join(topo.dir, 'bbroot');
    mkdirSync(join(root, 'bin'), { recursive: true });
    for (const sub of ['etc', 'tmp', 'www', 'proc', 'sys', 'dev']) mkdirSync(join(root, sub), { recursive: true });
    must(['cp', '/usr/bin/busybox', join(root, 'bin/busybox')]);
    for (const app of [
      'sh',
      'ping',
      'wget',
      'nc',
      'httpd',
      'nslookup',
      'sleep',
      'ip',
      'cat',
      'hostname',
      'echo',
      'ls',
      'timeout',
    ]) {
      must(['ln', '-sf', 'busybox', join(root, 'bin', app)]);
    }
    writeFileSync(join(root, 'etc/passwd'), 'root:x:0:0:root:/:/bin/sh\n');
    must(['tar', '-C', root, '-cf', tar, '.']);
  }
  d.must(['import', '-c', 'CMD ["/bin/sh"]', tar, tag], 120_000);
}
