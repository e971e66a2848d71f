/**
 * What a planned model is made of, before any of it is downloaded (the spawn's memory check runs
 * first): its files where they will be, with the hub's sizes, plus the GGUF header(s) read from the
 * hub by range requests (a couple of MB, not the tensors) or a safetensors model's config.json.
 * The token rule holds: every request goes through the hub client's file fetcher.
 * An offline plan (hub unreachable, snapshot complete in the cache) is read from the disk instead,
 * later, by whoever estimates it.
 */
import { readGgufModelRemote } from "../../resources/gguf.ts";
import type { ModelFootprint } from "../../shared/model-source.ts";
import type { HubClient } from "./hub-client.ts";
import type { ModelPlan } from "./plan.ts";
import { isGguf } from "./select.ts";

const isConfig = (path: string) => path.toLowerCase() === "config.json";

export async function planFootprint(plan: ModelPlan, client: HubClient, signal?: AbortSignal): Promise<ModelFootprint> {
  const footprint: ModelFootprint = {
    local_path: plan.localPath,
    format: plan.selection.format,
    metadata: {},
    files: plan.files.map((f) => ({ path: f.remote.path, local_path: f.snapshotPath, size_bytes: f.remote.size })),
  };
  if (plan.offline) return footprint;
  const fetcher = (path: string) => client.fileFetcher({ repo: plan.repo, revision: plan.commit, path }, signal);
  const urlOf = (path: string) => client.fileUrl(plan.repo, plan.commit, path);
  if (plan.selection.format === "gguf") {
    // Shards in order: the first one carries the hyperparameters.
    const shards = plan.files.filter((f) => isGguf(f.remote.path)).sort((a, b) => a.remote.path.localeCompare(b.remote.path));
    if (shards.length === 0) return footprint;
    const byUrl = new Map(shards.map((f) => [urlOf(f.remote.path), { size: f.remote.size, fetch: fetcher(f.remote.path) }]));
    const fetch = ((input: string | URL | Request, init?: RequestInit) => byUrl.get(String(input))!.fetch(input, init)) as typeof globalThis.fetch;
    footprint.metadata = { gguf: await readGgufModelRemote([...byUrl].map(([url, f]) => ({ url, size: f.size })), { fetch }) };
  } else if (plan.selection.format === "safetensors") {
    const config = plan.files.find((f) => isConfig(f.remote.path));
    if (config) {
      try {
        footprint.metadata = { config: await (await fetcher(config.remote.path)(urlOf(config.remote.path))).json() };
      } catch {
        // Without its config.json the estimate falls back to the weights' size.
      }
    }
  }
  return footprint;
}
