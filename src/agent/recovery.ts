/**
 * Start-up recovery of local endpoints, around the first list from the store (Agent.recover calls these in order):
 *
 *   recover  the state file's endpoints are re-opened (all at once) and forward again; intents (attachments a
 *            crash interrupted) are undone; this runs while the first list is read from the store
 *   sweepStrays  every TAP carrying this host's marker that no endpoint owns is deleted, in the agent's
 *            namespace and in every namespace the state file names
 *   rebuild  without a usable state file: the endpoints the store lists for this host are adopted again from the
 *            TAPs still in their namespaces
 *   settle   every claim the store holds for this host that no local endpoint holds is given up
 *
 * TAPs are recognised by their marker (tap.ts ownerMarker); no other interface is ever touched.
 */
import { statSync } from 'node:fs';
import { parseAddress6, parseSubnet, parseSubnet6 } from '../common/addr.js';
import type { Logger } from '../common/log.js';
import type { EndpointRec, NetworkRec } from '../kv/schema.js';
import { native } from '../sys/native.js';
import { ip, ipJson, netnsPath } from '../sys/ip.js';
import { closeTap, ownedBy, setOffloads, setTapGsoMaxSegs, type Tap } from '../tap/tap.js';
import { parseIpv4 } from '../vxlan/ipv4.js';
import { parseMac } from '../vxlan/mac.js';
import { type Endpoints, safe } from './endpoints.js';
import type { AgentState, LocalRecord } from './state.js';

export class Recovery {
  constructor(private readonly eps: Endpoints) {}

  /**
   * Start-up, while the first list is read from the store: re-adopts the endpoints of the state file (each
   * persistent TAP re-opened inside its namespace, all at once) and gives up what interrupted attachments (intents)
   * claimed under their name. sweepStrays() removes their TAPs afterwards.
   */
  async recover(st: AgentState | null): Promise<void> {
    await Promise.all((st?.endpoints ?? []).map((r) => this.recoverOne(r)));
    for (const i of st?.intents ?? []) {
      this.eps.o.log.warn('undoing an attach that the agent did not finish (it was stopped or crashed)', {
        endpoint: i.name,
        netns: i.netns,
      });
      this.eps.o.ipam.forget({ network: i.network, name: i.name });
    }
    try {
      this.eps.o.persist();
    } catch (e) {
      this.eps.o.log.error('cannot write the state file at start-up; attachments will fail until it can be', {
        err: e,
      });
    }
  }

  /** Deletes the TAPs with this host's marker that no endpoint owns: in the agent's namespace and in every
   * namespace the state file names. After forwarding has resumed: nothing waits for it. */
  async sweepStrays(st: AgentState | null): Promise<void> {
    const spaces = new Set<string | undefined>([undefined]);
    for (const x of [...(st?.endpoints ?? []), ...(st?.intents ?? [])]) spaces.add(x.netns);
    await this.sweep(spaces);
  }

  /**
   * With no usable state file (deleted, or unreadable and moved aside): the endpoints the store still lists for
   * this host (`mine`) whose TAPs are still in their namespaces are adopted again. Returns how many.
   */
  async rebuild(networks: ReadonlyMap<string, NetworkRec>, mine: readonly EndpointRec[]): Promise<number> {
    let n = 0;
    for (const e of mine) {
      const network = e.network;
      const rec = networks.get(network);
      if (!rec || e.host !== this.eps.o.host || this.eps.byName.has(e.name) || !e.netns) continue;
      let nsIno = 0;
      try {
        nsIno = statSync(netnsPath(e.netns)).ino;
      } catch {
        continue; // its namespace is gone: settle() gives its claim up
      }
      const r: LocalRecord = {
        name: e.name,
        network,
        vni: rec.vni,
        netns: e.netns,
        ifname: e.ifname ?? 'eth0',
        ip: e.ip,
        mac: e.mac,
        mtu: rec.mtu,
        subnet: rec.subnet,
        gateway: rec.gateway,
        ...(rec.subnet6 ? { subnet6: rec.subnet6, gateway6: rec.gateway6 ?? null } : {}),
        ...(e.ip6 ? { ip6: e.ip6 } : {}),
        aliases: e.aliases,
        nsIno,
        vnetHdr: this.eps.o.offload,
        ...(rec.allowTagged ? { allowTagged: true } : {}),
        ...(rec.encrypted ? { encrypted: true } : {}),
      };
      if (await this.recoverOne(r)) n++;
    }
    if (n > 0) {
      try {
        this.eps.o.persist();
      } catch (e) {
        this.eps.o.log.error('cannot write the rebuilt state file', { err: e });
      }
    }
    return n;
  }

  /**
   * After the first list from the store: every record the store holds for this host (`mine`) that is not a local
   * endpoint (an attach interrupted after its claim, an endpoint whose TAP is gone) is given up, so the store, the
   * state file and the kernel agree.
   */
  settle(mine: readonly EndpointRec[]): void {
    for (const e of mine) {
      if (e.host === this.eps.o.host && !this.eps.byName.has(e.name) && !this.eps.intents.has(e.name)) {
        this.eps.o.log.info('giving up a claim no local endpoint holds', {
          endpoint: e.name,
          network: e.network,
          ip: e.ip,
        });
        this.eps.o.ipam.forget({ network: e.network, name: e.name, ip: e.ip, ip6: e.ip6, mac: e.mac });
      }
    }
  }

  /** Re-opens one recorded endpoint's TAP and adopts it; on failure drops it (and its TAP, if it is there). */
  private async recoverOne(r: LocalRecord): Promise<boolean> {
    const { log, networks } = this.eps.o;
    let tap: Tap | null = null;
    try {
      tap = await reopen(r, this.eps.o.offload, log);
      // the store may be unreachable: forward on what the state file says until it answers
      networks.adoptOffline({
        name: r.network,
        vni: r.vni,
        subnet: parseSubnet(r.subnet),
        gateway: r.gateway ? parseIpv4(r.gateway) : 0,
        mtu: r.mtu,
        learning: true,
        internal: false,
        allowTagged: !!r.allowTagged,
        encrypted: !!r.encrypted,
        keyRotationSec: 0,
        subnet6: r.subnet6 ? parseSubnet6(r.subnet6) : null,
        gateway6: r.gateway6 ? parseAddress6(r.gateway6) : 0n,
      });
      this.eps.adopt(r, tap);
      log.info('endpoint recovered', { endpoint: r.name, netns: r.netns, ip: r.ip });
      return true;
    } catch (e) {
      if (tap) await closeTap(tap, { persist: true }); // ours, and not adopted: deleted
      this.eps.o.ipam.forget(r);
      log.warn('cannot recover endpoint; dropping it', { endpoint: r.name, netns: r.netns, err: e });
      return false;
    }
  }

  /** Deletes the TAPs this agent made in each namespace (undefined: its own) that no local endpoint owns. */
  private async sweep(spaces: Set<string | undefined>): Promise<void> {
    for (const ns of spaces) {
      let links: { ifname: string; ifalias?: string }[];
      try {
        links = await ipJson<{ ifname: string; ifalias?: string }[]>(['link', 'show'], ns);
      } catch {
        continue; // the namespace is gone, and its interfaces with it
      }
      for (const l of links) {
        const owner = ownedBy(l.ifalias, this.eps.o.host);
        if (owner === null) continue;
        // an endpoint's own TAP: in its namespace, or in ours when Docker has not moved the handed-off TAP yet
        const ep = this.eps.byName.get(owner);
        if (ep && ep.tap.ifname === l.ifname && (ep.netns === ns || ns === undefined)) continue;
        try {
          await ip(['link', 'del', 'dev', l.ifname], ns);
          this.eps.o.log.warn('removed a TAP no endpoint owns (left by an interrupted attach)', {
            ifname: l.ifname,
            netns: ns ?? '(agent)',
            endpoint: owner,
          });
        } catch (e) {
          this.eps.o.log.error('cannot remove a TAP no endpoint owns', {
            ifname: l.ifname,
            netns: ns ?? '(agent)',
            err: e,
          });
        }
      }
    }
  }
}

/** Re-opens a recorded endpoint's persistent TAP inside its namespace (throws what is wrong with it). */
async function reopen(r: LocalRecord, offload: boolean, log: Logger): Promise<Tap> {
  const n = native();
  const k = n.constants;
  const path = netnsPath(r.netns);
  if (statSync(path).ino !== r.nsIno) throw new Error('namespace was replaced');
  if (!!r.vnetHdr !== offload) {
    throw new Error(
      `it was attached with offloads ${r.vnetHdr ? 'on' : 'off'}; restart the agent the same way, or detach it`,
    );
  }
  // the TAP is the interface with the endpoint's MAC (Docker renames the one it was handed: vxNNNNNNNN -> ethN);
  // looked up before opening, so a missing one is never re-created by TUNSETIFF
  const links = await ipJson<{ ifname: string; address: string }[]>(['link', 'show'], r.netns);
  const found = links.find((l) => l.address === r.mac);
  if (!found) throw new Error(`no interface with MAC ${r.mac} in ${r.netns} (expected ${r.ifname})`);
  r.ifname = found.ifname;
  const [fd] = n.tapOpen(r.ifname, k.IFF_TAP | k.IFF_NO_PI | (r.vnetHdr ? k.IFF_VNET_HDR : 0), path);
  let uso = false;
  try {
    if (r.vnetHdr) {
      uso = setOffloads(fd);
      if (!(await setTapGsoMaxSegs(r.ifname, r.mtu, r.netns))) {
        log.warn('cannot set gso_max_segs on a recovered TAP (only speed)', { endpoint: r.name });
      }
    }
  } catch (e) {
    safe(() => n.closeFd(fd));
    throw e;
  }
  return { fd, ifname: r.ifname, netns: r.netns, mac: parseMac(r.mac), mtu: r.mtu, uso };
}
