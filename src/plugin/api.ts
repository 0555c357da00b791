/**
 * The Docker remote plugin protocol as vxtap speaks it: the calls, the shapes of their requests and answers
 * (moby/libnetwork drivers/remote/api/api.go and ipams/remote/api/api.go, as dockerd 20.10 really sends them:
 * docs/docker.md), and the validators every handler uses, whose messages say which field is wrong.
 */
import { invalid } from '../common/errors.js';

export type Body = Record<string, unknown>;

/** Calls that arrive with no body. */
export const NO_BODY_CALLS = new Set([
  'Plugin.Activate',
  'NetworkDriver.GetCapabilities',
  'IpamDriver.GetCapabilities',
  'IpamDriver.GetDefaultAddressSpaces',
]);

export interface IPAMData {
  AddressSpace: string;
  Pool: string;
  Gateway?: string;
  AuxAddresses?: Record<string, string> | null;
}

export interface CreateNetworkRequest {
  NetworkID: string;
  Options?: {
    'com.docker.network.generic'?: Record<string, string>;
    'com.docker.network.enable_ipv6'?: boolean;
    'com.docker.network.internal'?: boolean;
  };
  IPv4Data: IPAMData[];
  IPv6Data?: IPAMData[];
}

export interface EndpointInterface {
  Address?: string;
  AddressIPv6?: string;
  MacAddress?: string;
}

export interface CreateEndpointRequest {
  NetworkID: string;
  EndpointID: string;
  Interface?: EndpointInterface;
  Options?: Body;
}

export interface JoinRequest {
  NetworkID: string;
  EndpointID: string;
  SandboxKey: string;
  Options?: Body;
}

export interface JoinResponse {
  InterfaceName: { SrcName: string; DstPrefix: string };
  Gateway?: string;
  StaticRoutes: { Destination: string; RouteType: number; NextHop?: string }[];
  DisableGatewayService: boolean;
}

export interface RequestPoolRequest {
  AddressSpace: string;
  Pool: string;
  SubPool?: string;
  Options?: Record<string, string>;
  V6?: boolean;
}

export interface RequestAddressRequest {
  PoolID: string;
  Address?: string;
  Options?: Record<string, string>;
}

export function str(b: Body, k: string): string {
  const v = b[k];
  if (typeof v !== 'string' || !v) throw invalid(`${k} must be a non-empty string`);
  return v;
}

export function optStr(b: Body, k: string): string | undefined {
  const v = b[k];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw invalid(`${k} must be a string`);
  return v;
}

export function id(b: Body, k: string): string {
  const v = str(b, k);
  if (!/^[A-Za-z0-9_.-]{1,128}$/.test(v)) throw invalid(`${k} ${JSON.stringify(v.slice(0, 80))} is not an ID`);
  return v;
}

export function obj(b: Body, k: string): Body {
  const v = b[k];
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v)) throw invalid(`${k} must be an object`);
  return v as Body;
}

export function strMap(b: Body, k: string): Record<string, string> {
  const o = obj(b, k);
  const out: Record<string, string> = {};
  for (const [kk, v] of Object.entries(o)) {
    if (typeof v === 'string') out[kk] = v;
    else if (typeof v === 'number' || typeof v === 'boolean') out[kk] = String(v);
    else throw invalid(`${k}.${kk} must be a string`);
  }
  return out;
}
