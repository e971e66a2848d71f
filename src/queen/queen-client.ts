/**
 * Talks to queen-rbee when QUEEN_CALLBACK_URL is set: forwards worker-ready events as upstream did
 * (`POST {queen}/v2/workers/ready`, Bearer, 5 s timeout, failures only logged).
 */
import type { HttpClient } from "../shared/http-client.ts";
import type { Logger } from "../shared/logger.ts";
import { errorMessage } from "../shared/errors.ts";
import type { WorkerInfo } from "../workers/schemas.ts";

/** What the forward needs of a worker's record. */
export type ReadyWorker = Pick<WorkerInfo, "id" | "url" | "model_ref" | "backend">;

export class QueenNotifier {
  constructor(
    private readonly http: HttpClient,
    private readonly logger: Logger,
    private readonly callbackUrl: string,
    private readonly token: string | undefined,
    private readonly timeoutMs = 5000,
  ) {}

  get enabled(): boolean {
    return this.callbackUrl !== "";
  }

  async workerReady(w: ReadyWorker): Promise<void> {
    if (!this.enabled) return;
    const url = `${this.callbackUrl.replace(/\/+$/, "")}/v2/workers/ready`;
    try {
      const res = await this.http.request(url, {
        json: { worker_id: w.id, url: w.url, model_ref: w.model_ref, backend: w.backend },
        token: this.token,
        timeoutMs: this.timeoutMs,
      });
      if (!res.ok) this.logger.warn("queen rejected ready forward", { worker_id: w.id, status: res.status });
    } catch (e) {
      this.logger.warn("ready forward to queen failed", { worker_id: w.id, err: errorMessage(e) });
    }
  }
}
