/**
 * The validated config as plain data, for the modules of a running daemon, which must not load
 * the parser (yaml, zod: src/daemon/config.ts). A `Config` is objects, arrays, strings, numbers
 * and booleans only, so it crosses a thread boundary by structured clone unchanged: the config
 * thread (src/daemon/config-thread.ts) parses and validates it, posts it, and `deepFreeze` freezes
 * the copy again (STYLE rule 12: nothing downstream changes config). Its errors cross the same
 * way as `PlainError`, rebuilt into the IpipdError they were, code and message unchanged.
 * Also here: what the daemon asks of a config without the parser (`fouInUse`, `allFou`,
 * `tunOverhead`).
 */
import { FOU_ENCAP_LEN } from '../ipip/fou.js';
import { IPV4_MIN_HEADER } from '../ipip/ipv4.js';
import type { Config } from './config.js';
import { IpipdError, type ErrorCode } from './errors.js';

export type { Address, Config, Prefix } from './config.js';

/** Freeze `o` and everything in it; returns `o`. */
export function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}

/** An error as the config thread posts it: an IpipdError's code and message, or any other error's stack. */
export interface PlainError {
  code?: ErrorCode;
  message: string;
}

export function toPlainError(err: unknown): PlainError {
  if (err instanceof IpipdError) return { code: err.code, message: err.message };
  return { message: err instanceof Error ? (err.stack ?? err.message) : String(err) };
}

export function fromPlainError(e: PlainError): Error {
  return e.code !== undefined ? new IpipdError(e.code, e.message) : new Error(e.message);
}

/** Whether ipipd opens FOU sockets: a peer has `encap: fou`, or kernel-learned peers will. */
export function fouInUse(c: FouInput): boolean {
  return c.peers.some((p) => p.encap === 'fou') || (c.routes.source === 'kernel' && c.fou.kernel_peers === 'fou');
}

/** Every peer, configured and kernel-learned, uses FOU: the default TUN MTU leaves room for 28 bytes, not 20. */
export function allFou(c: FouInput): boolean {
  return fouInUse(c) && c.peers.every((p) => p.encap === 'fou') && (c.routes.source !== 'kernel' || c.fou.kernel_peers === 'fou');
}

/**
 * The outer headers the default TUN MTU (underlay MTU minus this) leaves room for: an IPv4
 * header (RFC 2003 §5.1), or IPv4 and UDP when every peer uses FOU.
 */
export function tunOverhead(c: FouInput): number {
  return allFou(c) ? FOU_ENCAP_LEN : IPV4_MIN_HEADER;
}

/** What `fouInUse`, `allFou` and `tunOverhead` read of a config. */
interface FouInput {
  readonly peers: readonly { readonly encap: string }[];
  readonly routes: { readonly source: string };
  readonly fou: { readonly kernel_peers: string };
}
