import { Etcd3 } from 'etcd3';
import { after, before } from 'node:test';
import { EtcdKv } from '../../src/kv/etcd.js';
import { startEtcd, type EtcdServer } from '../helpers/etcd.js';
import { conformance } from './conformance.js';

let srv: EtcdServer;
before(async () => {
  srv = await startEtcd();
});
after(async () => {
  await srv?.stop();
});

conformance('etcd', async () => {
  const a = new EtcdKv({ endpoints: [srv.endpoint] });
  const b = new EtcdKv({ endpoints: [srv.endpoint] });
  return {
    a,
    b,
    compact: async (rev) => {
      const c = new Etcd3({ hosts: `http://${srv.endpoint}` });
      await c.kv.compact({ revision: String(rev), physical: true });
      c.close();
    },
    revoke: async (id) => {
      const c = new Etcd3({ hosts: `http://${srv.endpoint}` });
      await c.leaseClient.leaseRevoke({ ID: id });
      c.close();
    },
    done: async () => {
      await a.close();
      await b.close();
    },
  };
});
