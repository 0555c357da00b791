/**
 * The local control socket: HTTP/1.1 + JSON on a unix socket (mode 0600: root only), so the CLI, scripts and
 * `curl --unix-socket` all speak it. Routes (all under /v1):
 *
 *   GET    /status                      agent identity
 *   GET    /networks                    list            POST /networks  {name,vni?,subnet,gateway?,mtu?,learning?,internal?,allowTagged?,encrypted?,keyRotationSec?}
 *   GET    /networks/NAME               inspect         DELETE /networks/NAME
 *   GET    /endpoints                   list            POST /endpoints {network,netns,name?,ip?,mac?,ifname?,defaultRoute?,aliases?}
 *   DELETE /endpoints/NAME
 *   GET    /fdb[?network=NAME]          entries         POST /fdb {network,mac,dst}   DELETE /fdb {network,mac,dst?}
 *   GET    /stats                       counters
 *
 * Errors: 4xx/5xx with {"error":{"code","message"}} (codes in docs/errors.md). Bodies over 64 KiB are refused.
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { Agent } from './agent.js';
import { AgentError, invalid, notFound } from '../common/errors.js';
import { serveUnix } from '../common/http.js';
import type { Logger } from '../common/log.js';

const BODY_MAX = 64 * 1024;

type Handler = (
  agent: Agent,
  body: Record<string, unknown>,
  param: string,
  query: URLSearchParams,
) => unknown | Promise<unknown>;

const routes: [method: string, pattern: RegExp, handler: Handler][] = [
  ['GET', /^\/v1\/status$/, (a) => ({ host: a.host, vtep: a.stats().vtep, pid: process.pid, version: 1 })],
  ['GET', /^\/v1\/networks$/, (a) => Promise.all([...a.networks.values()].map((n) => a.describeNetwork(n)))],
  [
    'POST',
    /^\/v1\/networks$/,
    async (a, b) =>
      a.describeNetwork(
        await a.createNetwork({
          name: str(b, 'name'),
          vni: b.vni === undefined ? undefined : num(b, 'vni'),
          subnet: b.subnet === undefined ? undefined : str(b, 'subnet'),
          gateway: b.gateway === undefined ? undefined : b.gateway === null ? null : str(b, 'gateway'),
          mtu: b.mtu === undefined ? undefined : num(b, 'mtu'),
          learning: b.learning === undefined ? undefined : bool(b, 'learning'),
          internal: b.internal === undefined ? undefined : bool(b, 'internal'),
          allowTagged: b.allowTagged === undefined ? undefined : bool(b, 'allowTagged'),
          ipv6: b.ipv6 === undefined ? undefined : bool(b, 'ipv6'),
          subnet6: optStr(b, 'subnet6'),
          gateway6: b.gateway6 === undefined ? undefined : b.gateway6 === null ? null : str(b, 'gateway6'),
          encrypted: b.encrypted === undefined ? undefined : bool(b, 'encrypted'),
          keyRotationSec: b.keyRotationSec === undefined ? undefined : num(b, 'keyRotationSec'),
        }),
      ),
  ],
  ['GET', /^\/v1\/networks\/([^/]+)$/, (a, _b, p) => a.describeNetwork(a.network(p))],
  ['DELETE', /^\/v1\/networks\/([^/]+)$/, async (a, _b, p) => (await a.deleteNetwork(p), { deleted: p })],
  ['GET', /^\/v1\/endpoints$/, (a) => [...a.endpoints.values()].map((e) => a.describeEndpoint(e))],
  [
    'POST',
    /^\/v1\/endpoints$/,
    async (a, b) =>
      a.describeEndpoint(
        await a.attach({
          network: str(b, 'network'),
          netns: str(b, 'netns'),
          name: optStr(b, 'name'),
          ip: optStr(b, 'ip'),
          ip6: optStr(b, 'ip6'),
          mac: optStr(b, 'mac'),
          ifname: optStr(b, 'ifname'),
          defaultRoute: b.defaultRoute === undefined ? undefined : bool(b, 'defaultRoute'),
          aliases: b.aliases === undefined ? undefined : strList(b, 'aliases'),
        }),
      ),
  ],
  ['DELETE', /^\/v1\/endpoints\/([^/]+)$/, async (a, _b, p) => (await a.detach(p), { detached: p })],
  ['GET', /^\/v1\/fdb$/, (a, _b, _p, q) => a.fdbShow(q.get('network') ?? undefined)],
  ['POST', /^\/v1\/fdb$/, (a, b) => (a.fdbAdd(str(b, 'network'), str(b, 'mac'), str(b, 'dst')), { added: true })],
  [
    'DELETE',
    /^\/v1\/fdb$/,
    (a, b) => (a.fdbDel(str(b, 'network'), str(b, 'mac'), optStr(b, 'dst')), { deleted: true }),
  ],
  ['GET', /^\/v1\/stats$/, (a) => a.stats()],
];

function str(b: Record<string, unknown>, k: string): string {
  const v = b[k];
  if (typeof v !== 'string' || v === '') throw invalid(`"${k}" is required and must be a non-empty string`);
  return v;
}
function optStr(b: Record<string, unknown>, k: string): string | undefined {
  return b[k] === undefined ? undefined : str(b, k);
}
function strList(b: Record<string, unknown>, k: string): string[] {
  const v = b[k];
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw invalid(`"${k}" must be an array of strings`);
  return v as string[];
}
function num(b: Record<string, unknown>, k: string): number {
  const v = b[k];
  if (typeof v !== 'number' || !Number.isFinite(v)) throw invalid(`"${k}" is required and must be a number`);
  return v;
}
function bool(b: Record<string, unknown>, k: string): boolean {
  const v = b[k];
  if (typeof v !== 'boolean') throw invalid(`"${k}" must be true or false`);
  return v;
}

async function readBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > BODY_MAX) throw invalid(`request body over ${BODY_MAX} bytes`);
    chunks.push(c as Buffer);
  }
  if (size === 0) return {};
  let v: unknown;
  try {
    v = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw invalid('request body is not valid JSON');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw invalid('request body must be a JSON object');
  return v as Record<string, unknown>;
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const data = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) });
  res.end(data);
}

export function serveControl(agent: Agent, path: string, log: Logger): Promise<Server> {
  return serveUnix(
    path,
    (req, res) => void handle(agent, req, res, log),
    `control socket ${path} is in use by a running agent; give this one --socket`,
    0o700,
  );
}

async function handle(agent: Agent, req: IncomingMessage, res: ServerResponse, log: Logger): Promise<void> {
  try {
    const url = new URL(req.url ?? '/', 'http://vxtap');
    let matchedPath = false;
    for (const [method, re, h] of routes) {
      const m = re.exec(url.pathname);
      if (!m) continue;
      matchedPath = true;
      if (method !== req.method) continue;
      const body = req.method === 'GET' ? {} : await readBody(req);
      const out = await h(agent, body, m[1] === undefined ? '' : decodePath(m[1]), url.searchParams);
      send(res, 200, out);
      return;
    }
    if (matchedPath)
      throw new AgentError('ERR_INVALID_ARGUMENT', `method ${req.method} not allowed on ${url.pathname}`);
    throw notFound(`no such API path ${url.pathname}`);
  } catch (e) {
    if (e instanceof AgentError) {
      send(res, e.status, { error: { code: e.code, message: e.message } });
    } else {
      log.error('control request failed', { url: req.url, err: e });
      send(res, 500, { error: { code: 'ERR_INTERNAL', message: (e as Error).message ?? String(e) } });
    }
  }
}

/** A path segment's percent-encoding decoded; a malformed one is the client's error (400), not the agent's. */
function decodePath(seg: string): string {
  try {
    return decodeURIComponent(seg);
  } catch {
    throw invalid(`malformed percent-encoding in ${JSON.stringify(seg.slice(0, 80))}`);
  }
}
