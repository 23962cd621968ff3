import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns';
import { isIP, type LookupFunction } from 'node:net';

/**
 * Loopback, link-local and unspecified addresses: where a redirect or a token realm
 * must not send a mirror whose upstream is elsewhere (SSRF: 127.0.0.1:6379, the cloud
 * metadata service at 169.254.169.254, 0.0.0.0 which Linux dials as loopback).
 */
export function isLocalAddress(address: string): boolean {
  const ip = address.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  const family = isIP(ip);
  if (family === 4) return isLocalV4(ip);
  if (family !== 6) return false;
  const h = hextets(ip);
  const zeroPrefix = h.slice(0, 5).every((x) => x === 0);
  // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible) reach the IPv4 address inside.
  if (zeroPrefix && (h[5] === 0xffff || h[5] === 0)) {
    const [high = 0, low = 0] = h.slice(6);
    if (h[5] === 0xffff || high !== 0 || low > 1) return isLocalV4(`${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`);
    return true; // :: (unspecified) and ::1 (loopback)
  }
  return ((h[0] ?? 0) & 0xffc0) === 0xfe80; // fe80::/10, link-local
}

function isLocalV4(ip: string): boolean {
  const [a, b] = ip.split('.').map(Number);
  return a === 127 || a === 0 || (a === 169 && b === 254);
}

/** The eight 16-bit groups of a valid IPv6 address (`::` expanded, a trailing IPv4 part split in two). */
function hextets(ip: string): number[] {
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(ip);
  const text = v4
    ? ip.slice(0, v4.index) +
      [Number(v4[1]) * 256 + Number(v4[2]), Number(v4[3]) * 256 + Number(v4[4])].map((n) => n.toString(16)).join(':')
    : ip;
  const [head = '', tail] = text.split('::');
  const parse = (part: string): number[] => (part === '' ? [] : part.split(':').map((x) => Number.parseInt(x, 16)));
  const left = parse(head);
  const right = tail === undefined ? [] : parse(tail);
  return [...left, ...Array<number>(8 - left.length - right.length).fill(0), ...right];
}

/** A host that is local by its name alone: a local address literal, `localhost` or `*.localhost` (RFC 6761). */
export function isLocalHost(hostname: string): boolean {
  const host = hostname.toLowerCase().replace(/\.$/, '');
  return isLocalAddress(host) || host === 'localhost' || host.endsWith('.localhost');
}

/** Thrown when a hop would reach a local address its upstream may not send us to. */
export class LocalAddressError extends Error {
  readonly code = 'ERR_LOCAL_ADDRESS';

  constructor(host: string) {
    super(`${host} is a loopback or link-local address, and this upstream may not send the mirror there`);
    this.name = 'LocalAddressError';
  }
}

type Callback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/** A resolver with node:dns `lookup`'s shape, asked for every address of a name (tests inject one). */
export type Resolve = (
  hostname: string,
  options: LookupOptions & { all: true },
  callback: (err: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void,
) => void;

/**
 * A `lookup` for net.connect that drops local addresses for every host but `ownHost`
 * (the upstream's configured host may be local; what it redirects to may not). A name
 * left with no address fails with LocalAddressError. The check runs on the very answer
 * the socket dials, so a name that resolves elsewhere when asked again (DNS rebinding to
 * 169.254.169.254) cannot pass a check and then reach what it was checked against.
 * Literal IPs never reach a lookup: the transport checks those itself.
 */
export function lookupWithoutLocal(ownHost: string, resolve: Resolve = dnsLookup): LookupFunction {
  const own = ownHost.toLowerCase();
  return (hostname: string, options: LookupOptions, callback: Callback) => {
    resolve(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, []);
      const usable = hostname.toLowerCase() === own ? addresses : addresses.filter((a) => !isLocalAddress(a.address));
      if (usable.length === 0) return callback(new LocalAddressError(hostname), []);
      if (options.all) return callback(null, usable);
      const first = usable[0] as LookupAddress;
      callback(null, first.address, first.family);
    });
  };
}

/**
 * The Agent's connect-time lookup: local addresses dropped for every host but the
 * upstream's own, unless the upstream may send the mirror there (`allowLocal`); then
 * undefined (net's own lookup) unless a resolver is injected.
 */
export function connectLookup(
  ownHost: string,
  options: { readonly allowLocal: boolean; readonly resolve?: Resolve | undefined },
): LookupFunction | undefined {
  if (!options.allowLocal) return lookupWithoutLocal(ownHost, options.resolve);
  const { resolve } = options;
  if (resolve === undefined) return undefined;
  return (hostname: string, lookupOptions: LookupOptions, callback: Callback) => {
    resolve(hostname, { ...lookupOptions, all: true }, (err, addresses) => {
      if (err) return callback(err, []);
      if (lookupOptions.all) return callback(null, addresses);
      const first = addresses[0];
      if (first === undefined) return callback(Object.assign(new Error(`no address for ${hostname}`), { code: 'ENOTFOUND' }), []);
      callback(null, first.address, first.family);
    });
  };
}
