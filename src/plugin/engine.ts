/**
 * A small client for the local Docker Engine API (the few calls the plugin needs), over its unix socket.
 *
 * The remote-driver protocol never tells a plugin the network's or the container's NAME, and cannot create a
 * network on another host: the plugin asks the local dockerd for names, and creates the Docker side of networks
 * that other hosts made. API version 1.41 (dockerd 20.10) and later accept every call used here.
 */
import { request } from 'node:http';

export interface EngineNetwork {
  Id: string;
  Name: string;
  Driver: string;
  Options?: Record<string, string> | null;
  IPAM?: {
    Driver?: string;
    Options?: Record<string, string> | null;
    Config?: { Subnet?: string; Gateway?: string }[] | null;
  };
  Containers?: Record<
    string,
    { Name: string; EndpointID: string; MacAddress: string; IPv4Address: string; IPv6Address?: string }
  > | null;
}

export interface EngineContainer {
  Id: string;
  Name: string;
  State?: { Running?: boolean; Pid?: number };
  NetworkSettings?: {
    Networks?: Record<
      string,
      { NetworkID?: string; EndpointID?: string; Aliases?: string[] | null; IPAddress?: string }
    > | null;
  };
}

export class EngineError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.name = 'EngineError';
    this.status = status;
  }
}

const API = '/v1.41';

export class Engine {
  readonly socketPath: string;
  constructor(readonly url: string) {
    if (!url.startsWith('unix://'))
      throw new Error(`Docker API address ${JSON.stringify(url)}: give unix:///path/to/docker.sock`);
    this.socketPath = url.slice('unix://'.length);
  }

  private call<T>(method: string, path: string, body?: unknown, timeoutMs = 10_000): Promise<T> {
    return new Promise((resolve, reject) => {
      const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
      const req = request(
        {
          socketPath: this.socketPath,
          agent: false, // one connection per call: no reuse of a socket dockerd is closing (see src/agent/client.ts)
          method,
          path: API + path,
          headers: {
            Host: 'docker',
            ...(data ? { 'Content-Type': 'application/json', 'Content-Length': data.length } : {}),
          },
          timeout: timeoutMs,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            const status = res.statusCode ?? 0;
            if (status >= 300) {
              let msg = text;
              try {
                msg = (JSON.parse(text) as { message?: string }).message ?? text;
              } catch {
                /* plain text */
              }
              reject(new EngineError(status, `docker ${method} ${path}: ${status} ${msg.trim()}`));
              return;
            }
            try {
              resolve((text ? JSON.parse(text) : null) as T);
            } catch (e) {
              reject(new EngineError(status, `docker ${method} ${path}: bad JSON: ${(e as Error).message}`));
            }
          });
        },
      );
      req.on('timeout', () =>
        req.destroy(new EngineError(0, `docker ${method} ${path}: no answer in ${timeoutMs} ms`)),
      );
      req.on('error', (e) =>
        reject(e instanceof EngineError ? e : new EngineError(0, `cannot reach dockerd at ${this.url}: ${e.message}`)),
      );
      req.end(data);
    });
  }

  networks(): Promise<EngineNetwork[]> {
    return this.call('GET', '/networks');
  }

  /** null when dockerd does not know it (yet). */
  async network(id: string): Promise<EngineNetwork | null> {
    try {
      return await this.call<EngineNetwork>('GET', `/networks/${encodeURIComponent(id)}`);
    } catch (e) {
      if (e instanceof EngineError && e.status === 404) return null;
      throw e;
    }
  }

  async container(id: string): Promise<EngineContainer | null> {
    try {
      return await this.call<EngineContainer>('GET', `/containers/${encodeURIComponent(id)}/json`);
    } catch (e) {
      if (e instanceof EngineError && e.status === 404) return null;
      throw e;
    }
  }

  /** Creates a network; a slow create (dockerd calls back into this plugin) gets a minute. */
  createNetwork(spec: Record<string, unknown>): Promise<{ Id: string }> {
    return this.call('POST', '/networks/create', spec, 60_000);
  }

  removeNetwork(id: string): Promise<void> {
    return this.call('DELETE', `/networks/${encodeURIComponent(id)}`, undefined, 60_000);
  }
}
