/**
 * FDB entries the operator adds by hand (`vxtap fdb add`): a MAC behind a VTEP, or a VTEP on a network's flood
 * list (the all-zeros MAC), as `bridge fdb append` does for the kernel's VXLAN device. This is how a kernel VXLAN
 * device or another non-vxtap VTEP joins a network. Static entries outrank what the store says (kv) and what is
 * learned; deleting one brings back what it hid.
 */
import { AgentError, invalid, notFound } from '../common/errors.js';
import type { Logger } from '../common/log.js';
import { parseVtepAddress, splitVtepPort, vtepFamily } from '../common/vtep.js';
import type { Port } from '../dataplane/port.js';
import type { Fdb, FdbRow } from '../fdb/fdb.js';
import { MAC_ZERO, parseMac } from '../vxlan/mac.js';
import type { Networks } from './networks.js';
import type { KvTables } from './tables.js';

export class StaticFdb {
  constructor(
    private readonly fdb: Fdb<Port>,
    private readonly networks: Networks,
    private readonly tables: KvTables<Port>,
    private readonly log: Logger,
    /** This agent's own VTEP address and port: never a destination. */
    private readonly vtep: number,
    private readonly port: number,
  ) {}

  add(network: string, mac: string, dst: string): void {
    const net = this.networks.get(network);
    const m = parseFdbMac(mac);
    const { vtep, port } = this.parseDst(dst);
    if (m === MAC_ZERO) this.fdb.floodAdd(net.vni, vtep, port, 'static');
    else if (!this.fdb.set(net.vni, m, 'static', { vtep, port })) {
      throw new AgentError(
        'ERR_IN_USE',
        `MAC ${mac} is a local endpoint on ${network}; it cannot point at a remote VTEP`,
      );
    }
    this.log.info('fdb entry added', { network, mac, dst });
  }

  del(network: string, mac: string, dst?: string): void {
    const net = this.networks.get(network);
    const m = parseFdbMac(mac);
    let ok: boolean;
    if (m === MAC_ZERO) {
      if (dst === undefined) throw invalid('deleting from the flood list (00:00:00:00:00:00) needs the dst VTEP');
      const { vtep, port } = this.parseDst(dst);
      ok = this.fdb.floodDel(net.vni, vtep, port, 'static');
    } else ok = this.fdb.del(net.vni, m, 'static') || this.fdb.del(net.vni, m, 'learned');
    if (!ok) throw notFound(`no such static or learned entry for ${mac}${dst ? ` dst ${dst}` : ''} on ${network}`);
    this.tables.syncNetwork(net.name, net.vni); // what the static entry hid (a kv entry or flood row) comes back
  }

  /** Every entry of one network (or all), of every kind, with the network's name. */
  show(network?: string): (FdbRow & { network: string })[] {
    const byVni = new Map([...this.networks.byName.values()].map((n) => [n.vni, n.name]));
    const vni = network === undefined ? undefined : this.networks.get(network).vni;
    return this.fdb.dump(vni).map((r) => ({ network: byVni.get(r.vni) ?? String(r.vni), ...r }));
  }

  private parseDst(dst: string): { vtep: number; port: number } {
    if (typeof dst !== 'string')
      throw invalid('dst must be a VTEP address like 198.18.0.2, 198.18.0.2:4789, 2001:db8::2 or [2001:db8::2]:4789');
    const { addr, port } = splitVtepPort(dst, this.port);
    const vtep = parseVtepAddress(addr, 'dst', true);
    if (vtep === this.vtep && port === this.port) throw invalid(`dst ${dst} is this agent's own VTEP`);
    if (vtepFamily(vtep) !== vtepFamily(this.vtep)) {
      throw invalid(
        `dst ${dst} is an IPv${vtepFamily(vtep)} VTEP, this agent's underlay is IPv${vtepFamily(this.vtep)}: one agent speaks one family`,
      );
    }
    return { vtep, port };
  }
}

function parseFdbMac(mac: string): number {
  try {
    return parseMac(mac);
  } catch (e) {
    throw invalid((e as Error).message);
  }
}
