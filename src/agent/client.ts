/** Client for the control socket (used by the CLI and tests). */
import { request } from 'node:http';

export const DEFAULT_SOCKET = '/run/vxtap/vxtap.sock';

export class ControlError extends Error {
  readonly code: string;
  readonly status: number;
  constructor(code: string, status: number, message: string) {
    super(message);
    this.name = 'ControlError';
    this.code = code;
    this.status = status;
  }
}

export function call<T = unknown>(
  socketPath: string,
  method: string,
  path: string,
  body?: unknown,
  timeoutMs = 30_000,
): Promise<T> {
  return new Promise((resolve, reject) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      // agent: false: one connection per call. Node 20's default agent keeps sockets alive and may reuse one just as
      // the server's keep-alive timeout closes it (EPIPE / ECONNRESET on an idle client, seen in the tests).
      {
        socketPath,
        method,
        path,
        agent: false,
        headers: data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {},
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let v: unknown;
          try {
            v = text ? JSON.parse(text) : null;
          } catch {
            reject(new ControlError('ERR_PROTOCOL', res.statusCode ?? 0, `agent sent non-JSON: ${text.slice(0, 200)}`));
            return;
          }
          if ((res.statusCode ?? 500) >= 400) {
            const err = (v as { error?: { code?: string; message?: string } })?.error;
            reject(new ControlError(err?.code ?? 'ERR_INTERNAL', res.statusCode ?? 500, err?.message ?? text));
          } else resolve(v as T);
        });
      },
    );
    req.setTimeout(timeoutMs, () =>
      req.destroy(new ControlError('ETIMEDOUT', 0, `agent at ${socketPath} did not answer in ${timeoutMs} ms`)),
    );
    req.on('error', (e: NodeJS.ErrnoException) => {
      if (e instanceof ControlError) reject(e);
      else if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED')
        reject(
          new ControlError(
            'ERR_NO_AGENT',
            0,
            `no agent at ${socketPath}: start one with \`vxtap agent\` or give --socket`,
          ),
        );
      else if (e.code === 'EACCES')
        reject(new ControlError('ERR_PERMISSION', 0, `permission denied on ${socketPath}: run as root`));
      else reject(e);
    });
    if (data) req.write(data);
    req.end();
  });
}
