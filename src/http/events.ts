/** `GET /v1/events`: lifecycle events as SSE, `id:` on every event, `Last-Event-ID` replay. */
import { Elysia, t } from "elysia";
import type { HiveBus } from "../events.ts";
import { lastEventId, sseResponse } from "./sse.ts";
import type { ServerRef } from "./server-ref.ts";
import { streamedResponse } from "./schemas.ts";

export const eventsController = (bus: HiveBus, opts: { keepAliveMs: number; shutdown: AbortSignal; server: ServerRef }) =>
  new Elysia({ name: "hive.events" }).get(
    "/v1/events",
    ({ request }) =>
      sseResponse({
        request,
        server: opts.server.current,
        keepAliveMs: opts.keepAliveMs,
        shutdown: opts.shutdown,
        start: (sink) => {
          const after = lastEventId(request);
          // Events older than the buffer are gone: say so instead of replaying silently with a hole.
          if (after !== undefined && bus.oldestId > after + 1) {
            sink.send({ event: "replay_gap", data: { type: "replay_gap", requested_after: after, oldest_id: bus.oldestId } });
          }
          return bus.subscribe((e) => sink.send({ id: e.id, event: e.type, data: { type: e.type, time: e.time, ...e.data } }), after);
        },
      }),
    {
      query: t.Object({ last_event_id: t.Optional(t.String({ maxLength: 20, pattern: "^[0-9]*$", error: "query parameter last_event_id: must be a non-negative integer" })) }),
      detail: {
        tags: ["events"],
        summary: "Lifecycle events (spawned, callback, ready, exited, stopped, restarting, crash_loop, unhealthy, load_timeout, …) as server-sent events; resume with Last-Event-ID",
        responses: streamedResponse("text/event-stream", "id: <n>, event: <type>, data: {type,time,worker_id,…} per event; `: keep-alive` comments"),
      },
    },
  );
