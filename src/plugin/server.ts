/**
 * The plugin's socket: HTTP/1.1 on /run/docker/plugins/vxtap.sock (where dockerd discovers plugins), one
 * `POST /<Method>` per call, JSON both ways (docs/docker.md).
 *
 * Error answers follow what dockerd parses: a network-driver error is HTTP 200 {"Err": msg} and an IPAM error
 * 200 {"Error": msg} (an IPAM answer with only "Err" counts as success); a request the plugin cannot read (empty
 * body on a retry, bad JSON, over 1 MiB) gets HTTP 400 with both fields, so dockerd shows the message and does not
 * take an empty answer for success.
 */
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { serveUnix } from '../common/http.js';
import type { AgentError } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { PluginError, type DockerPlugin } from './plugin.js';

export const DEFAULT_PLUGIN_SOCKET = '/run/docker/plugins/vxtap.sock';
const BODY_MAX = 1 << 20;
const CONTENT_TYPE = 'application/vnd.docker.plugins.v1.2+json';

export function servePlugin(plugin: DockerPlugin, path: string, log: Logger): Promise<Server> {
  return serveUnix(
    path,
    (req, res) => void handle(plugin, req, res, log),
    `${path} is in use: another vxtap agent serves Docker on this host`,
  );
}

async function handle(plugin: DockerPlugin, req: IncomingMessage, res: ServerResponse, log: Logger): Promise<void> {
  const method = (req.url ?? '/').replace(/^\//, '').split('?')[0];
  const ipam = method.startsWith('IpamDriver.');
  const send = (status: number, body: unknown): void => {
    const data = JSON.stringify(body);
    // one call per connection: dockerd resends a call whose kept-alive connection the server closed under it (the
    // idle timeout racing its next request), and the resent call has lost its body
    res.writeHead(status, {
      'Content-Type': CONTENT_TYPE,
      'Content-Length': Buffer.byteLength(data),
      Connection: 'close',
    });
    res.end(data);
  };
  const fail = (status: number, msg: string): void => {
    if (status === 200) send(200, ipam ? { Error: msg } : { Err: msg });
    else send(status, { Err: msg, Error: msg });
  };
  if (req.method !== 'POST') return fail(405, `${req.method} ${req.url}: plugin calls are POST /<Method>`);
  let body: Record<string, unknown> | null = null;
  try {
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const c of req) {
      n += (c as Buffer).length;
      if (n > BODY_MAX) return fail(413, `${method}: request body over ${BODY_MAX} bytes`);
      chunks.push(c as Buffer);
    }
    const text = Buffer.concat(chunks).toString('utf8').trim();
    if (text) {
      const v = JSON.parse(text) as unknown;
      if (typeof v !== 'object' || v === null || Array.isArray(v))
        return fail(400, `${method}: the body must be a JSON object`);
      body = v as Record<string, unknown>;
    }
  } catch (e) {
    return fail(400, `${method}: unreadable request body: ${(e as Error).message}`);
  }
  const t0 = Date.now();
  try {
    const out = await plugin.handle(method, body);
    log.debug('plugin call', { method, ms: Date.now() - t0 });
    send(200, out);
  } catch (e) {
    const msg = (e as Error).message;
    if (e instanceof PluginError) {
      log.warn('plugin call refused', { method, status: e.status, err: msg });
      return fail(e.status, msg);
    }
    log.warn('plugin call failed', { method, err: msg, code: (e as AgentError).code });
    fail(200, msg);
  }
}
