/**
 * `POST /v1/shutdown` (Bearer, like every route that is not public): answers 202 at once, then the
 * hive shuts down exactly as on SIGTERM (refuse spawns, end streams, stop or keep the workers per
 * the exit policy, close storage, one summary line) and the process exits (main.ts).
 */
import { Elysia } from "elysia";
import { MessageResponse, errorResponses } from "./schemas.ts";

export const shutdownController = (requestShutdown: () => void) =>
  new Elysia({ name: "hive.shutdown" }).post(
    "/v1/shutdown",
    ({ set }) => {
      set.status = 202;
      // After this answer is on its way: the graceful server stop lets it finish.
      setTimeout(requestShutdown, 0);
      return { message: "shutting down" };
    },
    {
      response: { 202: MessageResponse, ...errorResponses },
      detail: { tags: ["health"], summary: "Shut the hive down gracefully (202, then as on SIGTERM; the process exits 0)" },
    },
  );
