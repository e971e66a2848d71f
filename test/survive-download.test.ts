/**
 * An unfinished download survives a SIGKILL of the hive: the next hive resumes it under the same
 * id from the parts already on disk, and the worker that was waiting for it starts when it is done.
 */
import { afterEach, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { FakeHub } from "./fixtures/fake-hub.ts";
import { prepareDataDir, startHiveProcess, type HiveProcess } from "./fixtures/hive-process.ts";
import { freePort, killGroup, tempDir, waitFor } from "./helpers.ts";

const MiB = 1024 * 1024;
const cleanups: Array<() => void | Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

test("a download killed halfway resumes after the restart, and the worker waiting for it starts", async () => {
  const size = 8 * MiB;
  const hub = await FakeHub.start({ chunkBytes: 64 * 1024, ggufHeaders: true });
  cleanups.push(() => hub.stop());
  hub.addRepo({ id: "org/tiny", files: [{ path: "tiny.Q4_K_M.gguf", size, seed: 7 }] });
  // The first transfer stops halfway (until released) with four 1 MiB parts done.
  hub.addFault({ kind: "stall", atByte: size / 2, on: "cdn", ms: 60_000 });

  const dir = tempDir("rbee-survive-dl-");
  const port = freePort();
  const base = 20000 + Math.floor(Math.random() * 40000);
  const { config } = prepareDataDir(dir.path, [base, base + 50], "[downloads]\npart_size_mb = 1\nparallel_parts = 1\n");
  const hives: HiveProcess[] = [];
  const groups = new Set<number>();
  cleanups.push(() => {
    for (const h of hives) h.proc.kill("SIGKILL");
    for (const g of groups) killGroup(g);
    dir.cleanup();
  });
  const start = async () => {
    const h = await startHiveProcess({ dataDir: dir.path, port, config, env: { HF_ENDPOINT: hub.url } });
    hives.push(h);
    return h;
  };
  /** Bytes the on-disk partial state (`<blob>.rbee-partial.json`) records as written. */
  const savedDone = (): number => {
    const [path] = [...new Bun.Glob("**/*.rbee-partial.json").scanSync({ cwd: dir.path, absolute: true, dot: true })];
    if (!path) return 0;
    try {
      return (JSON.parse(readFileSync(path, "utf8")).parts as Array<{ done: number }>).reduce((s, p) => s + p.done, 0);
    } catch {
      return 0; // being replaced
    }
  };
  const downloads = async (h: HiveProcess) => ((await (await h.api("/v1/models/downloads")).json()) as any).downloads as any[];

  const h1 = await start();
  const res = await h1.api("/v1/workers/spawn", { json: { model_ref: "hf:org/tiny", backend: "cpu", device: 0 } });
  expect(res.status).toBe(200);
  const { worker_id } = (await res.json()) as any;
  const waiting: any = await (await h1.api(`/v1/workers/${worker_id}`)).json();
  expect(waiting).toMatchObject({ state: "loading", phase: "downloading" });
  const downloadId = waiting.download_id as string;
  await waitFor(async () => hub.stalledCount === 1 && (await downloads(h1)).some((d) => d.id === downloadId && d.bytes_downloaded >= size / 2), {
    what: "download stalled halfway",
    timeoutMs: 15_000,
  });
  // The progress reported is what arrived; what a restart resumes from is the saved state, which
  // follows within stateFlushIntervalMs (a timer that a loaded machine may run late): wait for it.
  await waitFor(() => savedDone() >= size / 2, { what: "the saved state at half", timeoutMs: 15_000 });
  h1.proc.kill("SIGKILL");
  await h1.exited;
  const resumedFrom = savedDone();
  hub.releaseStalls();
  hub.clearLog();

  const h2 = await start();
  expect(h2.logs().find((l) => l.msg === "download resumed")).toMatchObject({ download_id: downloadId, model_ref: "hf:org/tiny" });
  expect(h2.logs().find((l) => l.msg === "workers of the previous hive")).toMatchObject({ restored: [worker_id] });
  const ready = await waitFor(
    async () => {
      const w: any = await (await h2.api(`/v1/workers/${worker_id}`)).json();
      if (w.pid) groups.add(w.pid);
      return w.state === "idle" ? w : undefined;
    },
    { what: "the waiting worker ready", timeoutMs: 15_000 },
  );
  expect(ready).toMatchObject({ id: worker_id, download_id: downloadId, phase: "running", restart_count: 0 });
  expect(ready.model_path).toEndWith("/tiny.Q4_K_M.gguf");
  expect((await downloads(h2)).find((d) => d.id === downloadId)).toMatchObject({ state: "complete", bytes_downloaded: size });
  // Resumed exactly where the saved state stood: only the rest went over the wire again.
  expect(resumedFrom).toBeGreaterThanOrEqual(size / 2);
  expect(hub.bytesServed((e) => e.server === "cdn")).toBe(size - resumedFrom);
});
