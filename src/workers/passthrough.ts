/**
 * Forwarding a request to a worker and its answer back, as the bytes arrive: no buffering and no
 * parsing either way (a 256-token stream is 256 small chunks passed through), the caller's pace
 * is the worker's (the answer is pulled as the caller reads it), and a caller that goes away
 * cancels the worker's request. Each forwarded request holds one of the worker's slots from
 * before it is sent until its answer ends, fails or is cancelled: released exactly once.
 *
 * Headers go through unchanged except the hop-by-hop ones; the worker gets the hive's token as its
 * Bearer (workers inherit LLORCH_API_TOKEN and require it; the caller's own Authorization is the
 * hive's token too, and nothing else is ever forwarded) and an `X-Correlation-ID` (the caller's,
 * or a new one), which comes back on the answer.
 */
import { HiveError, errorMessage } from "../shared/errors.ts";
import { CORRELATION_HEADER, contextOf } from "../shared/correlation.ts";
import { deadlineExceeded, deadlineSignal, isDeadlineAbort } from "../shared/deadline-propagation.ts";
import type { FetchLike } from "../shared/http-client.ts";
import type { SlotLease, WorkerActivity } from "./activity.ts";
import type { TargetResolver } from "./proxy-target.ts";

export interface PassthroughOptions {
  resolve: TargetResolver;
  activity: WorkerActivity;
  /** LLORCH_API_TOKEN (unset: no Authorization goes to the worker). */
  workerToken?: string;
  /** [workers] proxy_body_limit_mb, in bytes. */
  bodyLimitBytes: number;
  fetch?: FetchLike;
  /** Wall clock for the caller's X-Deadline (unix ms; default Date.now). */
  now?: () => number;
  /** Chunks of answers streamed back from a worker (metrics): told every CHUNK_REPORT_EVERY chunks and at the end. */
  onChunks?: (workerId: string, chunks: number) => void;
}

/** Chunk counts are handed on in batches: one call per chunk would cost more than the chunk. */
const CHUNK_REPORT_EVERY = 64;

/** Where a request goes on the worker: its profile's inference route, or a path given as it came. */
export type Upstream = { kind: "inference" } | { kind: "path"; pathAndQuery: string };

/** Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus what the hive sets itself. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);
const SET_BY_HIVE = new Set(["host", "authorization", CORRELATION_HEADER]);

export class WorkerPassthrough {
  private readonly fetchImpl: FetchLike;

  constructor(private readonly o: PassthroughOptions) {
    this.fetchImpl = o.fetch ?? fetch;
  }

  /**
   * The worker's answer, streaming. Throws HiveError before anything was sent upstream or when the
   * worker cannot be reached: 404/503 (resolver), 429 (activity), 413, 502 WORKER_UNREACHABLE.
   */
  async forward(request: Request, workerId: string, upstream: Upstream): Promise<Response> {
    this.o.resolve(workerId); // 404 / 503 before waiting for a slot
    const limit = this.o.bodyLimitBytes;
    const declared = declaredLength(request.headers);
    if (declared !== undefined && declared > limit) throw tooLarge(limit, declared);
    const ctx = contextOf(request);
    // The caller's X-Deadline bounds the wait for a slot and the whole exchange with the worker.
    const deadline = deadlineSignal(ctx, (this.o.now ?? Date.now)());
    const signal = deadline ? AbortSignal.any([request.signal, deadline.signal]) : request.signal;

    let lease: SlotLease;
    try {
      lease = await this.o.activity.acquire(workerId, signal);
    } catch (e) {
      deadline?.clear();
      if (e instanceof HiveError) throw e;
      if (isDeadlineAbort(deadline?.signal)) throw deadlineExceeded("the request's deadline (X-Deadline) passed while it waited for a free slot");
      throw callerGone(); // it left the queue
    }
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      deadline?.clear();
      lease.release();
    };
    let overLimit = false;
    try {
      // Again: while it waited for its slot the worker may have restarted on another port.
      const target = this.o.resolve(workerId);
      const correlationId = ctx.correlationId;
      // A small body with a declared length (a prompt) is read first: it can be sent again, so the
      // request may go over a kept-alive connection (see send). Anything else streams through, a
      // chunked body counted as it goes (a declared length is enforced by the HTTP parser).
      let body: ReadableStream<Uint8Array> | ArrayBuffer | null = request.body;
      const replayable = body === null || (declared !== undefined && declared <= BUFFERED_BODY_MAX);
      if (body && replayable) body = await request.arrayBuffer();
      else if (body && declared === undefined) body = limitedBody(request.body!, limit, () => (overLimit = true));
      const path = upstream.kind === "inference" ? target.inferencePath : upstream.pathAndQuery;
      const answer = await this.send(target.baseUrl + path, {
        method: upstream.kind === "inference" ? "POST" : request.method,
        headers: upstreamHeaders(request.headers, this.o.workerToken, correlationId),
        body,
        signal,
        redirect: "manual",
        // Bytes pass through as the worker encoded them (Bun's fetch would decompress).
        decompress: false,
        keepalive: replayable,
        duplex: "half",
      } as RequestInit);
      const headers = downstreamHeaders(answer.headers, correlationId);
      return new Response(watched(answer.body, release, this.chunkCounter(workerId)), { status: answer.status, statusText: answer.statusText, headers });
    } catch (e) {
      release();
      if (e instanceof HiveError) throw e;
      if (overLimit) throw tooLarge(limit);
      if (isDeadlineAbort(deadline?.signal)) throw deadlineExceeded(`the request's deadline (X-Deadline) passed before worker ${workerId} answered`);
      if (request.signal.aborted) throw callerGone();
      throw new HiveError(502, "WORKER_UNREACHABLE", `cannot reach worker ${workerId}: ${errorMessage(e)}`);
    }
  }

  /** Counts one answer's chunks and hands them on in batches (and the rest when it ends). */
  private chunkCounter(workerId: string): ((ended: boolean) => void) | undefined {
    const report = this.o.onChunks;
    if (!report) return undefined;
    let pending = 0;
    return (ended) => {
      if (!ended) pending++;
      if (pending > 0 && (ended || pending >= CHUNK_REPORT_EVERY)) {
        report(workerId, pending);
        pending = 0;
      }
    };
  }

  /**
   * Send once more when a kept-alive connection turns out closed before any answer: llama.cpp's
   * server closes one after a few requests, and a pooled connection can be picked just then. Only
   * bodies that can be sent again go over kept-alive connections (`keepalive` in init); the rest get
   * a fresh connection each (about 40 µs more on loopback).
   */
  private async send(url: string, init: RequestInit): Promise<Response> {
    try {
      return await this.fetchImpl(url, init);
    } catch (e) {
      if (!init.keepalive || init.signal?.aborted || !isConnectionReset(e)) throw e;
      return this.fetchImpl(url, { ...init, keepalive: false });
    }
  }
}

/** Bodies up to this size with a declared length are read before forwarding (replayable, cheaper). */
const BUFFERED_BODY_MAX = 256 * 1024;

function isConnectionReset(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return code === "ECONNRESET" || code === "EPIPE" || code === "ConnectionClosed";
}

/** The caller went away before the worker answered (nobody reads this answer; the log does). */
const callerGone = () => new HiveError(499, "CLIENT_CLOSED_REQUEST", "the caller went away");

const tooLarge = (limit: number, size?: number) =>
  new HiveError(413, "PAYLOAD_TOO_LARGE", `request body ${size !== undefined ? `is ${size} bytes` : "is too large"}; the limit is ${limit} bytes`);

function declaredLength(headers: Headers): number | undefined {
  const raw = headers.get("content-length");
  if (raw === null) return undefined;
  const n = Number(raw);
  return Number.isFinite(n) && n >= 0 ? n : undefined;
}

/** Names listed in `Connection` are hop-by-hop for this message too. */
function connectionTokens(headers: Headers): Set<string> | null {
  const raw = headers.get("connection");
  return raw ? new Set(raw.toLowerCase().split(",").map((s) => s.trim())) : null;
}

function upstreamHeaders(incoming: Headers, token: string | undefined, correlationId: string): Headers {
  const listed = connectionTokens(incoming);
  const out = new Headers();
  for (const [name, value] of incoming) {
    if (HOP_BY_HOP.has(name) || SET_BY_HIVE.has(name) || listed?.has(name)) continue;
    out.append(name, value);
  }
  out.set(CORRELATION_HEADER, correlationId);
  if (token) out.set("authorization", `Bearer ${token}`);
  return out;
}

function downstreamHeaders(incoming: Headers, correlationId: string): Headers {
  const listed = connectionTokens(incoming);
  const out = new Headers();
  for (const [name, value] of incoming) {
    if (HOP_BY_HOP.has(name) || listed?.has(name)) continue;
    if (name === "set-cookie") continue; // appended one by one below
    out.append(name, value);
  }
  for (const cookie of incoming.getSetCookie()) out.append("set-cookie", cookie);
  out.set(CORRELATION_HEADER, correlationId);
  return out;
}

/**
 * The worker's answer body, pulled only as the caller reads (back-pressure); `done` runs once when
 * it ends, fails or the caller cancels it (which also cancels the worker's side).
 */
function watched(body: ReadableStream<Uint8Array> | null, done: () => void, chunk?: (ended: boolean) => void): ReadableStream<Uint8Array> | null {
  if (!body) {
    done();
    return null;
  }
  const reader = body.getReader();
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    chunk?.(true);
    done();
  };
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          const { done: end, value } = await reader.read();
          if (end) {
            controller.close();
            finish();
          } else {
            chunk?.(false);
            controller.enqueue(value);
          }
        } catch (e) {
          finish();
          controller.error(e);
        }
      },
      cancel(reason) {
        finish();
        return reader.cancel(reason).catch(() => {});
      },
    },
    { highWaterMark: 0 },
  );
}

/** A chunked request body, counted as it streams: past `limit` it fails (the request gets 413). */
function limitedBody(body: ReadableStream<Uint8Array>, limit: number, exceeded: () => void): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  let seen = 0;
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        const { done, value } = await reader.read();
        if (done) {
          controller.close();
          return;
        }
        seen += value.byteLength;
        if (seen > limit) {
          exceeded();
          void reader.cancel().catch(() => {});
          controller.error(new Error(`request body over ${limit} bytes`));
          return;
        }
        controller.enqueue(value);
      },
      cancel(reason) {
        return reader.cancel(reason).catch(() => {});
      },
    },
    { highWaterMark: 0 },
  );
}
