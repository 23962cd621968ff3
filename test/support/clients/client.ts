/**
 * What the end-to-end scenarios ask of a real client (dockerd, containerd, podman,
 * skopeo), so that each scenario is written once and run per client. A driver turns a
 * `PullRequest` and a `Target` into that client's own configuration and command line,
 * pulls, and reads back what the client stored.
 */

/** Registries the tests simulate, each by its own local docker-registry. */
export type RegistryName = 'docker.io' | 'ghcr.io';

/** Where a client finds one registry's content. */
export interface Endpoint {
  /** `host:port`, loopback. */
  readonly host: string;
  /**
   * Path before the repository for clients that cannot send containerd's `?ns=` (podman
   * mirror `location`, names by the mirror's own host): `ghcr.io/` on the mirror, empty
   * for the default upstream and for a registry reached directly.
   */
  readonly prefix: string;
  /** Set when the endpoint speaks HTTPS with a certificate from a test CA. */
  readonly tls?: { readonly caFile: string; readonly certDir: string };
}

/** A way to reach the simulated registries: straight to them, or through a mirror. */
export interface Target {
  readonly label: string;
  endpoint(registry: RegistryName): Endpoint;
}

export interface PullRequest {
  readonly registry: RegistryName;
  /** The repository as the registry stores it (`library/alpine`). */
  readonly repository: string;
  /** A tag, or a digest (`sha256:…`). */
  readonly reference: string;
  /** How a Docker user writes it (`alpine:3.20`); docker.io images only. */
  readonly dockerName?: string;
}

export interface Pulled {
  /** The digest the client recorded for the reference: the manifest or the index. */
  readonly topDigest: string;
  /** Config digests of the platforms the client pulled (its image IDs). */
  readonly configDigests: readonly string[];
}

export interface PullClient {
  readonly name: string;
  readonly version: string;
  /** `host`: the client pulls this machine's platform; `all`: every platform (skopeo --all). */
  readonly platforms: 'host' | 'all';
  pull(request: PullRequest, target: Target): Promise<Pulled>;
  /** Forgets every image, so the next pull fetches everything again. */
  reset(): Promise<void>;
  stop(): Promise<void>;
}

/** `repo:tag` or `repo@sha256:…`. */
export function refOf(repository: string, reference: string): string {
  return reference.startsWith('sha256:') ? `${repository}@${reference}` : `${repository}:${reference}`;
}

/** An Error naming the command and the end of what it printed. */
export function describeFailure(command: string, err: unknown): Error {
  const { stderr, stdout } = err as { stderr?: string | Buffer; stdout?: string | Buffer };
  const text = `${stderr?.toString() ?? ''}${stdout?.toString() ?? ''}`.trim().slice(-4000);
  return new Error(`${command} failed: ${text || String(err)}`, { cause: err });
}
