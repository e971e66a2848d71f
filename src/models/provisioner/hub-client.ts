/**
 * A native client of the Hugging Face hub HTTP API.
 *
 * - `HF_TOKEN` goes only to the hub's own origin (scheme + host + port of `endpoint`). Redirects
 *   are followed by hand so the Authorization header is dropped on any hop to another origin
 *   (the CDN). The token is never logged or put in an error.
 * - Hub errors map to stable codes: MODEL_NOT_FOUND, REVISION_NOT_FOUND, MODEL_FILE_NOT_FOUND (404),
 *   MODEL_GATED (403), HUB_BAD_RESPONSE / HUB_UNREACHABLE (502).
 */
import { HiveError } from "../../shared/errors.ts";
import type { Logger } from "../../shared/logger.ts";
import { silentLogger } from "../../shared/logger.ts";
import { TransientError, parseRetryAfter, withRetry, type RetryPolicy } from "./retry.ts";

export type FetchFn = (input: string | URL | Request, init?: RequestInit) => Promise<Response>;

export interface HubClientOptions {
  /** Hub base URL (env HF_ENDPOINT upstream). */
  endpoint: string;
  policy: RetryPolicy;
  /** Timeout of one API request (JSON). File bodies use the stall detector instead. */
  requestTimeoutMs: number;
  /** Access token (env HF_TOKEN upstream); sent only to the endpoint's origin. */
  token?: string;
  /** Injected fetch (default globalThis.fetch). */
  fetch?: FetchFn;
  logger?: Logger;
}

/** A file of a repo at a commit, as the tree API describes it. */
export interface RemoteFile {
  path: string;
  size: number;
  /** sha256 (LFS oid) for LFS files, else null. */
  sha256: string | null;
  /** git blob sha1; null when unknown (offline listings of LFS files). */
  gitOid: string | null;
  /** Name of the blob in the HF cache: sha256 for LFS files, git oid otherwise. */
  etag: string;
}

export interface RepoRevision {
  commit: string;
  /** The raw JSON answer (siblings, gated, ...). */
  info: Record<string, unknown>;
}

/** Headers the hub puts on `resolve` answers (the first hop, before any redirect). */
export interface HubFileHeaders {
  repoCommit: string | null;
  linkedEtag: string | null;
  linkedSize: number | null;
  etag: string | null;
}

export interface OpenedFile {
  response: Response;
  hub: HubFileHeaders;
  /** Final URL after redirects. */
  url: string;
}

export interface RequestContext {
  repo: string;
  revision?: string;
  path?: string;
}

/** Redirect hops followed per request (the hub's resolve → CDN is one). */
const MAX_REDIRECTS = 5;
const USER_AGENT = "rbee-hive/0.1";
const SHA256 = /^[0-9a-f]{64}$/;
const SHA1 = /^[0-9a-f]{40}$/;

function stripEtag(v: string | null): string | null {
  if (v === null) return null;
  return v.replace(/^W\//, "").replace(/^"|"$/g, "");
}

export function encodeRepoPath(path: string): string {
  return path.split("/").map(encodeURIComponent).join("/");
}

export class HubClient {
  readonly endpoint: string;
  readonly origin: string;
  readonly policy: RetryPolicy;
  private readonly token: string | undefined;
  private readonly fetchFn: FetchFn;
  private readonly requestTimeoutMs: number;
  private readonly logger: Logger;

  constructor(opts: HubClientOptions) {
    this.endpoint = opts.endpoint.replace(/\/+$/, "");
    this.origin = new URL(this.endpoint).origin;
    this.token = opts.token && opts.token.length > 0 ? opts.token : undefined;
    this.fetchFn = opts.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.requestTimeoutMs = opts.requestTimeoutMs;
    this.logger = opts.logger ?? silentLogger;
    this.policy = opts.policy;
  }

  /** True when `url` is on the hub's own origin (the only place the token may go). */
  isHubOrigin(url: string): boolean {
    try {
      return new URL(url).origin === this.origin;
    } catch {
      return false;
    }
  }

  fileUrl(repo: string, revision: string, path: string): string {
    return `${this.endpoint}/${repo}/resolve/${encodeURIComponent(revision)}/${encodeRepoPath(path)}`;
  }

  /** Resolve a branch/tag/commit to the commit sha. */
  async resolveRevision(repo: string, revision: string, signal?: AbortSignal): Promise<RepoRevision> {
    const url = `${this.endpoint}/api/models/${repo}/revision/${encodeURIComponent(revision)}`;
    const info = (await this.getJson(url, { repo, revision }, signal)) as Record<string, unknown>;
    const sha = info?.sha;
    if (typeof sha !== "string" || !SHA1.test(sha)) {
      throw new HiveError(502, "HUB_BAD_RESPONSE", `hub answered revision ${revision} of ${repo} without a commit sha`);
    }
    return { commit: sha, info };
  }

  /** Every file of the repo at `revision` (recursive), following `Link: rel="next"` pages. */
  async listFiles(repo: string, revision: string, signal?: AbortSignal): Promise<RemoteFile[]> {
    let url: string | null = `${this.endpoint}/api/models/${repo}/tree/${encodeURIComponent(revision)}?recursive=true`;
    const out: RemoteFile[] = [];
    for (let page = 0; url && page < 10_000; page++) {
      const { body, link } = await this.getJsonWithLink(url, { repo, revision }, signal);
      if (!Array.isArray(body)) throw new HiveError(502, "HUB_BAD_RESPONSE", `hub tree listing of ${repo} is not an array`);
      for (const e of body as Array<Record<string, unknown>>) {
        if (e?.type !== "file") continue;
        out.push(toRemoteFile(e, repo));
      }
      url = link ? new URL(link, url).toString() : null;
      if (url && !this.isHubOrigin(url)) throw new HiveError(502, "HUB_BAD_RESPONSE", "tree pagination left the hub");
    }
    return out;
  }

  /** HEAD a file without following redirects: commit, sha256 (X-Linked-Etag), size. */
  async fileMetadata(repo: string, revision: string, path: string, signal?: AbortSignal): Promise<HubFileHeaders> {
    const url = this.fileUrl(repo, revision, path);
    return withRetry(
      `HEAD ${repo}/${path}`,
      async () => {
        const res = await this.fetchFn(url, {
          method: "HEAD",
          redirect: "manual",
          headers: this.headersFor(url),
          signal: this.apiSignal(signal),
        });
        if (res.status >= 400) throw this.errorFor(res, { repo, revision, path });
        return hubHeaders(res);
      },
      this.policy,
      signal,
    );
  }

  /**
   * One GET of `resolve/{rev}/{path}` (optionally ranged), following redirects by hand. Not
   * retried here: the caller retries with an updated Range. Throws TransientError or HiveError.
   */
  async openFile(
    repo: string,
    revision: string,
    path: string,
    range: { start: number; end: number } | null,
    signal: AbortSignal,
  ): Promise<OpenedFile> {
    const rangeHeader = range ? `bytes=${range.start}-${range.end}` : null;
    const { res, url, hub } = await this.getFollowingRedirects(this.fileUrl(repo, revision, path), rangeHeader, signal);
    if (res.status >= 400) {
      await res.body?.cancel().catch(() => {});
      if (!this.isHubOrigin(url) && res.status !== 416 && res.status < 500 && res.status !== 429) {
        // A CDN refusing a (possibly expired) signed URL: go through the hub again.
        throw new TransientError(`file host answered ${res.status}`, undefined, res.status);
      }
      throw this.errorFor(res, { repo, revision, path });
    }
    return { response: res, hub: hub ?? hubHeaders(res), url };
  }

  /**
   * GET `url`, following redirects by hand so the token goes to the hub's origin only (headersFor).
   * Returns the first answer that is not a redirect, the URL it came from, and the hub's file
   * headers from the first answer of the hub itself (the CDN's do not carry them).
   */
  private async getFollowingRedirects(
    start: string,
    range: string | null,
    signal: AbortSignal | undefined,
  ): Promise<{ res: Response; url: string; hub: HubFileHeaders | null }> {
    let url = start;
    let hub: HubFileHeaders | null = null;
    for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
      const headers = this.headersFor(url);
      if (range) headers.set("range", range);
      headers.set("accept-encoding", "identity");
      const res = await this.fetchFn(url, { method: "GET", redirect: "manual", headers, signal });
      if (hub === null && this.isHubOrigin(url)) hub = hubHeaders(res);
      if (res.status < 300 || res.status >= 400 || res.status === 304) return { res, url, hub };
      const loc = res.headers.get("location");
      await res.body?.cancel().catch(() => {});
      if (!loc) throw new TransientError(`redirect ${res.status} without Location`, undefined, res.status);
      url = new URL(loc, url).toString();
    }
    throw new TransientError(`more than ${MAX_REDIRECTS} redirects`);
  }

  /**
   * A fetch for readers of one hub file outside the download path (the GGUF header reader's range
   * requests, config.json): only its Range header is taken from the caller; redirects are followed
   * by hand so the token goes to the hub's origin only; transient failures are retried and hub
   * errors mapped like every other request (gated → MODEL_GATED, …).
   */
  fileFetcher(ctx: RequestContext, signal?: AbortSignal): typeof fetch {
    const get = (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
      const range = new Headers(init?.headers).get("range");
      const start = input instanceof Request ? input.url : String(input);
      return withRetry(
        `GET ${ctx.repo}/${ctx.path ?? ""}`,
        async () => {
          const { res } = await this.getFollowingRedirects(start, range, this.apiSignal(signal));
          if (res.status >= 400) {
            await res.body?.cancel().catch(() => {});
            throw this.errorFor(res, ctx);
          }
          return res;
        },
        this.policy,
        signal,
      );
    };
    return get as typeof fetch;
  }

  /** Headers for a request to `url`: the token only on the hub origin. */
  headersFor(url: string): Headers {
    const h = new Headers({ "user-agent": USER_AGENT });
    if (this.token && this.isHubOrigin(url)) h.set("authorization", `Bearer ${this.token}`);
    return h;
  }

  /** Map a failed hub answer to a HiveError (final) or TransientError (retry). */
  errorFor(res: Response, ctx: RequestContext): Error {
    const code = res.headers.get("x-error-code");
    const status = res.status;
    const hubMsg = (res.headers.get("x-error-message") ?? "").slice(0, 300);
    const where = `${ctx.repo}${ctx.path ? `/${ctx.path}` : ""}${hubMsg ? ` (hub: ${hubMsg})` : ""}`;
    const tokenHint = this.token
      ? "the configured HF_TOKEN does not grant access; accept the model's terms on the hub with that account"
      : "set HF_TOKEN to a token of an account that has access";
    if (code === "RepoNotFound") {
      return new HiveError(404, "MODEL_NOT_FOUND", `repository ${ctx.repo} not found on ${this.endpoint} (if it is private, ${tokenHint})`, {
        repo: ctx.repo,
      });
    }
    if (code === "RevisionNotFound") {
      return new HiveError(404, "REVISION_NOT_FOUND", `revision "${ctx.revision}" not found in ${ctx.repo}`, {
        repo: ctx.repo,
        revision: ctx.revision,
      });
    }
    if (code === "EntryNotFound") {
      return new HiveError(404, "MODEL_FILE_NOT_FOUND", `file ${where} not found at revision ${ctx.revision}`, {
        repo: ctx.repo,
        path: ctx.path,
      });
    }
    if (code === "GatedRepo" || status === 401 || status === 403) {
      return new HiveError(403, "MODEL_GATED", `access to ${ctx.repo} denied (HTTP ${status}): the model is gated or private; ${tokenHint}`, {
        repo: ctx.repo,
        hub_status: status,
      });
    }
    if (status === 404) {
      return new HiveError(404, "MODEL_NOT_FOUND", `${where} not found on ${this.endpoint}`, { repo: ctx.repo });
    }
    if (status === 408 || status === 429 || status >= 500) {
      const after = parseRetryAfter(res.headers.get("retry-after"), this.policy.retryAfterMaxMs);
      return new TransientError(`hub answered ${status}`, after, status);
    }
    return new HiveError(502, "HUB_BAD_RESPONSE", `hub answered ${status} for ${where}`, { hub_status: status });
  }

  private apiSignal(signal?: AbortSignal): AbortSignal {
    const t = AbortSignal.timeout(this.requestTimeoutMs);
    return signal ? AbortSignal.any([signal, t]) : t;
  }

  private async getJson(url: string, ctx: RequestContext, signal?: AbortSignal): Promise<unknown> {
    return (await this.getJsonWithLink(url, ctx, signal)).body;
  }

  private async getJsonWithLink(
    url: string,
    ctx: RequestContext,
    signal?: AbortSignal,
  ): Promise<{ body: unknown; link: string | null }> {
    return withRetry(
      `GET ${new URL(url).pathname}`,
      async () => {
        let current = url;
        for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
          const res = await this.fetchFn(current, {
            headers: this.headersFor(current),
            redirect: "manual",
            signal: this.apiSignal(signal),
          });
          if (res.status >= 300 && res.status < 400) {
            const loc = res.headers.get("location");
            await res.body?.cancel().catch(() => {});
            if (!loc) throw new TransientError(`redirect without Location`, undefined, res.status);
            current = new URL(loc, current).toString();
            continue;
          }
          if (!res.ok) {
            await res.body?.cancel().catch(() => {});
            throw this.errorFor(res, ctx);
          }
          let body: unknown;
          try {
            body = await res.json();
          } catch (e) {
            throw new TransientError(`invalid JSON from hub: ${(e as Error).message}`);
          }
          return { body, link: nextLink(res.headers.get("link")) };
        }
        throw new TransientError(`more than ${MAX_REDIRECTS} redirects`);
      },
      this.policy,
      signal,
      (attempt, delay, err) =>
        this.logger.debug("hub request retry", { url: new URL(url).pathname, attempt, delay_ms: delay, error: (err as Error).message }),
    );
  }
}

function hubHeaders(res: Response): HubFileHeaders {
  const size = res.headers.get("x-linked-size");
  return {
    repoCommit: res.headers.get("x-repo-commit"),
    linkedEtag: stripEtag(res.headers.get("x-linked-etag")),
    linkedSize: size !== null && /^\d+$/.test(size) ? Number(size) : null,
    etag: stripEtag(res.headers.get("etag")),
  };
}

function nextLink(link: string | null): string | null {
  if (!link) return null;
  for (const part of link.split(",")) {
    const m = /<([^>]+)>\s*;\s*rel="?next"?/i.exec(part.trim());
    if (m) return m[1]!;
  }
  return null;
}

function toRemoteFile(e: Record<string, unknown>, repo: string): RemoteFile {
  const path = e.path;
  const size = e.size;
  const oid = e.oid;
  const lfs = e.lfs as Record<string, unknown> | undefined;
  const bad = (why: string) => new HiveError(502, "HUB_BAD_RESPONSE", `hub tree entry of ${repo} is malformed: ${why}`);
  if (typeof path !== "string" || path.length === 0) throw bad("path");
  if (typeof size !== "number" || !Number.isSafeInteger(size) || size < 0) throw bad(`size of ${path}`);
  const gitOid = typeof oid === "string" && SHA1.test(oid) ? oid : null;
  if (lfs && typeof lfs === "object") {
    const sha = lfs.oid;
    const lsize = typeof lfs.size === "number" ? lfs.size : size;
    if (typeof sha !== "string" || !SHA256.test(sha)) throw bad(`lfs.oid of ${path}`);
    return { path, size: lsize, sha256: sha, gitOid, etag: sha };
  }
  if (!gitOid) throw bad(`oid of ${path}`);
  return { path, size, sha256: null, gitOid, etag: gitOid };
}
