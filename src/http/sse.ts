/**
 * Server-sent events without Elysia's generator path: a generator parked on `await` only cleans up
 * when the next event arrives (bun-elysia.md pitfall 1), so streams here are push-based and end on
 * client abort, on `close()` and on daemon shutdown, whichever comes first.
 */
export interface SseMessage {
  id?: number | string;
  event?: string;
  /** Objects are sent as one line of JSON; strings as they are. */
  data: unknown;
}

export interface SseSink {
  send(message: SseMessage): void;
  /** End the stream (after a terminal event). */
  close(): void;
  readonly closed: boolean;
}

export interface SseOptions {
  request: Request;
  /** Bun server: lets the stream outlive the idle timeout. */
  server?: { timeout(request: Request, seconds: number): void } | null;
  keepAliveMs: number;
  /** Aborted when the daemon shuts down. */
  shutdown?: AbortSignal;
  /** Subscribe; return the cleanup. Runs once the stream is open. */
  start(sink: SseSink): (() => void) | void;
}

const encoder = new TextEncoder();

export function formatSse(message: SseMessage): string {
  let out = "";
  if (message.id !== undefined) out += `id: ${message.id}\n`;
  if (message.event) out += `event: ${message.event}\n`;
  const data = typeof message.data === "string" ? message.data : JSON.stringify(message.data);
  for (const line of data.split("\n")) out += `data: ${line}\n`;
  return out + "\n";
}

/** Parse a `Last-Event-ID` header (or `?last_event_id=`) into a number, if it is one. */
export function lastEventId(request: Request): number | undefined {
  const raw = request.headers.get("last-event-id") ?? new URL(request.url).searchParams.get("last_event_id");
  if (raw === null || raw.trim() === "") return undefined;
  const n = Number(raw);
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

export function sseResponse(opts: SseOptions): Response {
  opts.server?.timeout(opts.request, 0);
  let cleanup: (() => void) | void;
  let keepAlive: ReturnType<typeof setInterval> | undefined;
  let closed = false;
  let controller!: ReadableStreamDefaultController<Uint8Array>;

  const finish = () => {
    if (closed) return;
    closed = true;
    if (keepAlive) clearInterval(keepAlive);
    opts.request.signal.removeEventListener("abort", finish);
    opts.shutdown?.removeEventListener("abort", finish);
    try {
      cleanup?.();
    } catch {
      // cleanup must never throw into the stream machinery
    }
    try {
      controller.close();
    } catch {
      // already closed by the client
    }
  };

  const sink: SseSink = {
    send(message) {
      if (closed) return;
      try {
        controller.enqueue(encoder.encode(formatSse(message)));
      } catch {
        finish();
      }
    },
    close: finish,
    get closed() {
      return closed;
    },
  };

  const stream = new ReadableStream<Uint8Array>({
    start(c) {
      controller = c;
      if (opts.request.signal.aborted || opts.shutdown?.aborted) {
        closed = true;
        c.close();
        return;
      }
      opts.request.signal.addEventListener("abort", finish, { once: true });
      opts.shutdown?.addEventListener("abort", finish, { once: true });
      // An opening comment flushes headers at once so clients see the stream is live.
      c.enqueue(encoder.encode(": connected\n\n"));
      keepAlive = setInterval(() => {
        try {
          controller.enqueue(encoder.encode(": keep-alive\n\n"));
        } catch {
          finish();
        }
      }, opts.keepAliveMs);
      cleanup = opts.start(sink);
      if (closed) {
        try {
          cleanup?.();
        } catch {}
      }
    },
    cancel: finish,
  });

  return new Response(stream, {
    headers: {
      "content-type": "text/event-stream",
      "cache-control": "no-cache",
      connection: "keep-alive",
      "x-accel-buffering": "no",
    },
  });
}
