/** The unix-socket HTTP server that the control socket and the Docker plugin socket both use. */
import { chmodSync, existsSync, mkdirSync, unlinkSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect } from 'node:net';
import { dirname } from 'node:path';
import { AgentError } from './errors.js';

/**
 * An HTTP server on a root-only (0600) unix socket. A socket file left by a process that died is replaced; one a
 * live process answers on is not (`inUse` says what to do instead).
 */
export async function serveUnix(
  path: string,
  handler: (req: IncomingMessage, res: ServerResponse) => void,
  inUse: string,
  dirMode?: number,
): Promise<Server> {
  mkdirSync(dirname(path), { recursive: true, ...(dirMode ? { mode: dirMode } : {}) });
  if (existsSync(path)) {
    if (await socketAlive(path)) throw new AgentError('ERR_IN_USE', inUse);
    unlinkSync(path); // stale, from a process that died
  }
  const server = createServer(handler);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => resolve());
  });
  chmodSync(path, 0o600);
  return server;
}

function socketAlive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
