/**
 * Host routes queen-rbee's preflight reads: devices, resources, backends, capacity. Thin: read the
 * inventory (cached), ask the preflight, shape the answer.
 */
import { Elysia, t } from "elysia";
import { BackendInfo, describeBackends, type ProfileSupport } from "../resources/backends.ts";
import type { MemoryEstimate } from "../resources/memory-estimate.ts";
import type { SpawnPreflight } from "../resources/preflight.ts";
import type { HostSnapshot } from "../resources/types.ts";
import { DeviceList, HostResources, deviceList, hostResources } from "../resources/wire.ts";
import { ErrorResponse, Field, errorResponses, namedModels } from "./schemas.ts";

export interface ResourcesControllerDeps {
  inventory: { snapshot(): Promise<HostSnapshot> };
  preflight: SpawnPreflight;
  /** Worker profiles and whether their binaries are installed (read per request: cheap). */
  profiles: () => ProfileSupport[];
  counts: () => { models: number; workers: number };
  /** The estimate of a catalog model; throws 404 MODEL_NOT_FOUND. */
  estimateModel: (modelRef: string, opts: { revision?: string; context?: number }) => Promise<MemoryEstimate>;
}

const CapacityQuery = t.Object({
  device: t.String({ minLength: 1, maxLength: 16, description: '"cpu" or a GPU id ("gpu0")', error: 'query parameter device: must be "cpu" or a GPU id like "gpu0"' }),
  model: Field.modelRef("a model in this host's catalog"),
  revision: t.Optional(Field.revision()),
  context: t.Optional(Field.queryInteger("context", 1, 1_048_576)),
});

export const resourcesController = (d: ResourcesControllerDeps) =>
  new Elysia({ name: "hive.resources" })
    .model(namedModels({ DeviceList, HostResources, BackendList: t.Array(BackendInfo) }))
    .get(
      "/v1/devices",
      async () => {
        const s = await d.inventory.snapshot();
        return deviceList(s, d.preflight.budgets(s), d.counts());
      },
      {
        response: { 200: "DeviceList", ...errorResponses },
        detail: {
          tags: ["resources"],
          summary: "CPU, RAM and GPUs of this host with their memory, health and what workers hold (detection cached for resources.cache_ttl_s)",
        },
      },
    )
    .get(
      "/v1/resources",
      async () => {
        const s = await d.inventory.snapshot();
        return hostResources(s, d.preflight.budgets(s));
      },
      {
        response: { 200: "HostResources", ...errorResponses },
        detail: { tags: ["resources"], summary: "RAM and models-dir disk totals and availability (GiB fields plus exact bytes), GPUs in brief" },
      },
    )
    .get("/v1/backends", async () => describeBackends(await d.inventory.snapshot(), d.profiles()), {
      response: { 200: "BackendList", ...errorResponses },
      detail: { tags: ["resources"], summary: "Backends (a top-level array): cpu always, cuda/rocm/metal when their devices exist, with profiles and binaries" },
    })
    .get(
      "/v1/capacity",
      async ({ query }) => {
        const estimate = await d.estimateModel(query.model, { revision: query.revision, context: query.context });
        const answer = await d.preflight.capacity(query.device, estimate);
        if (!answer.fits) throw d.preflight.capacityRefusal(answer, estimate);
        return new Response(null, { status: 204 });
      },
      {
        query: CapacityQuery,
        response: { 204: t.Void({ description: "the model fits (nothing is reserved)" }), ...errorResponses, 409: ErrorResponse },
        detail: {
          tags: ["resources"],
          summary: "Would this catalog model fit on this device now? 204 yes; 409 no (INSUFFICIENT_VRAM / INSUFFICIENT_RAM with the numbers); 400 unknown device",
        },
      },
    );
