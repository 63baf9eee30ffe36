/**
 * Where a webhook may point. At creation a URL is checked for its form (absolute, `https`, or
 * `http` when the server allows it, no credentials) and for a host that is a private address
 * on its face; at delivery time every address the name resolves to is checked, and the
 * connection is made to that checked address (a `lookup` of our own on the request), so a
 * name cannot resolve to a public address for the check and a private one for the connect.
 */
import dns from "node:dns";
import net, { type LookupFunction } from "node:net";
import { EngineError } from "../errors.ts";

export interface TargetPolicy {
  /** PATCHBAY_WEBHOOK_ALLOW_HTTP */
  allowHttp: boolean;
  /** PATCHBAY_WEBHOOK_ALLOW_PRIVATE */
  allowPrivate: boolean;
}

/** Loopback, private, link-local, shared, multicast and reserved ranges: never a webhook's. */
const BLOCKED = (() => {
  const list = new net.BlockList();
  const v4: [string, number][] = [
    ["0.0.0.0", 8],
    ["10.0.0.0", 8],
    ["100.64.0.0", 10],
    ["127.0.0.0", 8],
    ["169.254.0.0", 16],
    ["172.16.0.0", 12],
    ["192.0.0.0", 24],
    ["192.0.2.0", 24],
    ["192.168.0.0", 16],
    ["198.18.0.0", 15],
    ["198.51.100.0", 24],
    ["203.0.113.0", 24],
    ["224.0.0.0", 4],
    ["240.0.0.0", 4],
  ];
  const v6: [string, number][] = [
    ["::", 128],
    ["::1", 128],
    ["64:ff9b::", 96],
    ["100::", 64],
    ["2001:db8::", 32],
    ["fc00::", 7],
    ["fe80::", 10],
    ["fec0::", 10],
    ["ff00::", 8],
  ];
  for (const [a, p] of v4) list.addSubnet(a, p, "ipv4");
  for (const [a, p] of v6) list.addSubnet(a, p, "ipv6");
  return list;
})();

/** Whether an IP address is one a webhook may not reach without PATCHBAY_WEBHOOK_ALLOW_PRIVATE. */
export function isPrivateAddress(address: string): boolean {
  const family = net.isIP(address);
  if (family === 0) return true;
  if (family === 6) {
    // An IPv4 address in IPv6 clothing (mapped, compatible) is judged as the IPv4 address.
    const v4 = /^::(?:ffff:)?(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
    if (v4) return isPrivateAddress(v4);
    const hex = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/i.exec(address);
    if (hex) {
      const n = (parseInt(hex[1]!, 16) << 16) | parseInt(hex[2]!, 16);
      return isPrivateAddress([n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join("."));
    }
  }
  return BLOCKED.check(address, family === 4 ? "ipv4" : "ipv6");
}

const refuse = (message: string, url?: string) =>
  new EngineError("invalid_webhook_url", message, url === undefined ? undefined : { url });

/** The URL's host without IPv6 brackets. */
export function hostOf(url: URL): string {
  return url.hostname.replace(/^\[(.*)\]$/, "$1");
}

/**
 * Check a webhook URL as a client gives it. Throws invalid_webhook_url: not absolute, a
 * scheme other than https (http when allowed), credentials in it, or a host that is a
 * private address or a `localhost` name without PATCHBAY_WEBHOOK_ALLOW_PRIVATE.
 */
export function checkWebhookUrl(raw: string, policy: TargetPolicy): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw refuse("webhook url is not an absolute URL");
  }
  const shown = `${url.protocol}//${url.host}${url.pathname}`;
  if (url.protocol !== "https:" && !(url.protocol === "http:" && policy.allowHttp))
    throw refuse(
      policy.allowHttp
        ? "webhook url must be http:// or https://"
        : "webhook url must be https:// (this server does not allow http:// webhooks; PATCHBAY_WEBHOOK_ALLOW_HTTP)",
      shown,
    );
  if (url.username || url.password) throw refuse("webhook url must not carry credentials; use the secret", shown);
  const host = hostOf(url).toLowerCase().replace(/\.$/, "");
  if (
    !policy.allowPrivate &&
    (host === "localhost" || host.endsWith(".localhost") || (net.isIP(host) && isPrivateAddress(host)))
  )
    throw refuse("webhook url names a private, loopback or link-local address (PATCHBAY_WEBHOOK_ALLOW_PRIVATE)", shown);
  return url;
}

/** Thrown (through the request) when a delivery's host resolves to an address the policy refuses. */
export class TargetRefused extends Error {
  constructor(host: string, address: string) {
    super(`${host} resolves to ${address}, a private, loopback or link-local address; refused`);
    this.name = "TargetRefused";
  }
}

/**
 * A `lookup` for the delivery's socket: resolves the name, refuses it when any address is
 * private (unless allowed), and hands the socket exactly the addresses it checked.
 */
export function guardedLookup(policy: TargetPolicy): LookupFunction {
  return (hostname, options, callback) => {
    dns.lookup(hostname, { all: true, family: options.family ?? 0 }, (err, addresses) => {
      if (err) return callback(err, "", 0);
      const bad = policy.allowPrivate ? undefined : addresses.find((a) => isPrivateAddress(a.address));
      if (bad) return callback(new TargetRefused(hostname, bad.address), "", 0);
      if (addresses.length === 0) return callback(new Error(`${hostname} has no address`), "", 0);
      if (options.all) return (callback as unknown as (e: null, a: dns.LookupAddress[]) => void)(null, addresses);
      callback(null, addresses[0]!.address, addresses[0]!.family);
    });
  };
}

/** A literal IP host is connected to without a lookup: check it here. Throws TargetRefused. */
export function checkLiteralHost(url: URL, policy: TargetPolicy): void {
  const host = hostOf(url);
  if (net.isIP(host) && !policy.allowPrivate && isPrivateAddress(host)) throw new TargetRefused(host, host);
}
