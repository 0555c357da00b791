/** `--kv` parsing: `etcd://host:port[,host:port...]` or a file path for the embedded store. */
import { readFileSync } from 'node:fs';
import { EmbeddedKv } from './embedded.js';
import { type Kv, KvError } from './kv.js';

export const DEFAULT_KV_PATH = '/var/lib/vxtap/store.db';

/** How to talk to etcd securely: files (PEM) and a user whose password is read from a file (never from argv). */
export interface KvSecurity {
  ca?: string;
  cert?: string;
  key?: string;
  user?: string;
  passwordFile?: string;
}

function readPem(path: string, what: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new KvError('ERR_KV_INVALID', `${what} ${path}: ${(e as Error).message}`);
  }
}

/** Opens the store `spec` names (the etcd client is loaded only for etcd://: it is most of an agent's start-up). */
export async function openKv(spec: string | undefined, sec: KvSecurity = {}): Promise<Kv> {
  const s = spec ?? DEFAULT_KV_PATH;
  if (s.startsWith('etcd://')) {
    const endpoints = s.slice('etcd://'.length).split(',').filter(Boolean);
    for (const e of endpoints) {
      if (!/^[A-Za-z0-9.-]+:\d{1,5}$/.test(e) && !/^\[[0-9a-fA-F:]+\]:\d{1,5}$/.test(e)) {
        throw new KvError('ERR_KV_INVALID', `--kv ${s}: endpoint ${JSON.stringify(e)} is not host:port`);
      }
    }
    if (!endpoints.length)
      throw new KvError('ERR_KV_INVALID', `--kv ${s}: give at least one host:port, e.g. etcd://127.0.0.1:2379`);
    if ((sec.cert === undefined) !== (sec.key === undefined))
      throw new KvError('ERR_KV_INVALID', '--kv-cert and --kv-key go together (a client certificate and its key)');
    if (sec.cert && !sec.ca) throw new KvError('ERR_KV_INVALID', '--kv-cert needs --kv-ca (the CA of etcd itself)');
    if ((sec.user === undefined) !== (sec.passwordFile === undefined))
      throw new KvError('ERR_KV_INVALID', '--kv-user and --kv-password-file go together');
    const tls = sec.ca
      ? {
          ca: readPem(sec.ca, '--kv-ca'),
          ...(sec.cert ? { cert: readPem(sec.cert, '--kv-cert'), key: readPem(sec.key!, '--kv-key') } : {}),
        }
      : undefined;
    const auth = sec.user
      ? { username: sec.user, password: readPem(sec.passwordFile!, '--kv-password-file').toString().trim() }
      : undefined;
    const { EtcdKv } = await import('./etcd.js');
    return new EtcdKv({ endpoints, tls, auth });
  }
  if (Object.values(sec).some((v) => v !== undefined))
    throw new KvError('ERR_KV_INVALID', '--kv-ca, --kv-cert, --kv-key, --kv-user are for etcd (--kv etcd://...)');
  if (/^[a-z]+:\/\//.test(s))
    throw new KvError('ERR_KV_INVALID', `--kv ${s}: unsupported scheme; use etcd://host:port or a file path`);
  return new EmbeddedKv(s);
}
