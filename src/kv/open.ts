/** `--kv` parsing: `etcd://host:port[,host:port...]` or a file path for the embedded store. */
import { EmbeddedKv } from './embedded.js';
import { type Kv, KvError } from './kv.js';

export const DEFAULT_KV_PATH = '/var/lib/vxtap/store.db';

/** Opens the store `spec` names (the etcd client is loaded only for etcd://: it is most of an agent's start-up). */
export async function openKv(spec: string | undefined): Promise<Kv> {
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
    const { EtcdKv } = await import('./etcd.js');
    return new EtcdKv({ endpoints });
  }
  if (/^[a-z]+:\/\//.test(s))
    throw new KvError('ERR_KV_INVALID', `--kv ${s}: unsupported scheme; use etcd://host:port or a file path`);
  return new EmbeddedKv(s);
}
