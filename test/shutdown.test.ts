import { afterEach, describe, expect, test } from "bun:test";
import { ShutdownCoordinator } from "../src/shutdown.ts";
import { memoryLogger, pidAlive, startTestHive, waitFor, type TestHive } from "./helpers.ts";

const hives: TestHive[] = [];
// close() is idempotent after a shutdown the test ran itself, and kills any worker group left.
afterEach(async () => Promise.all(hives.splice(0).map((h) => h.close())));

async function hive(opts: Parameters<typeof startTestHive>[0] = {}) {
  const h = await startTestHive(opts);
  hives.push(h);
  return h;
}

describe("shutdown coordinator", () => {
  test("steps run in order; a failing step does not stop the rest; the signal aborts first", async () => {
    const s = new ShutdownCoordinator(memoryLogger(), 1000);
    const order: string[] = [];
    s.register("a", async () => {
      order.push(`a:${s.signal.aborted}`);
    });
    s.register("b", () => {
      throw new Error("boom");
    });
    s.register("c", () => {
      order.push("c");
    });
    const result = await s.run("test");
    expect(order).toEqual(["a:true", "c"]);
    expect(result).toMatchObject({ timedOut: false, failed: ["b"] });
    expect(await s.run("again")).toBe(result); // idempotent
  });

  test("the total time is bounded: a step that never ends triggers the force steps", async () => {
    const s = new ShutdownCoordinator(memoryLogger(), 100);
    let forced = false;
    s.register("hang", () => new Promise(() => {}));
    s.registerForce(() => {
      forced = true;
    });
    // The step never resolves: only the bound can end this (the test timeout is the hang guard).
    const result = await s.run("test");
    expect(result.timedOut).toBe(true);
    expect(result.failed).toEqual([]);
    expect(result.ms).toBeGreaterThanOrEqual(99); // it did wait for the bound first
    expect(forced).toBe(true);
  });
});

describe("hive shutdown", () => {
  test("open event streams end, workers stop, the catalog is closed", async () => {
    const h = await hive();
    const { worker_id } = await h.spawn();
    const w = await h.waitState(worker_id, (x) => x.state === "idle", "idle");
    const res = await h.api("/v1/events");
    const reader = res.body!.getReader();
    await reader.read(); // stream is open
    const done = (async () => {
      for (;;) if ((await reader.read()).done) return true;
    })();
    await h.shutdown.run("test");
    expect(await done).toBe(true); // the stream ended; a stream left open would hang here (test timeout)
    expect(pidAlive(w.pid)).toBe(false);
    expect(() => h.catalog.list()).toThrow();
  });

  test("the real teardown order: stop accepting, monitor, workers, downloads, catalog", async () => {
    // A worker that ignores SIGTERM keeps the workers step busy for its whole grace.
    const h = await hive({ workerEnv: { FAKE_WORKER_IGNORE_SIGTERM: "1" }, config: { shutdown: { worker_grace_s: 0.5 } } });
    const { worker_id } = await h.spawn();
    const w = await h.waitState(worker_id, (x) => x.state === "idle", "idle");

    // Spy on the real services (their methods still run): which step starts when, and what the
    // world looks like from inside the workers step.
    const order: string[] = [];
    const during: Record<string, unknown> = {};
    const spy = <T extends object>(obj: T, method: keyof T & string, name: string, inside?: () => Promise<void> | void) => {
      const real = (obj[method] as (...a: unknown[]) => unknown).bind(obj);
      (obj as Record<string, unknown>)[method] = async (...args: unknown[]) => {
        order.push(name);
        await inside?.();
        return real(...args);
      };
    };
    spy(h.server, "stop", "http server");
    spy(h.monitor, "stop", "monitor");
    spy(h.lifecycle, "stopAll", "workers", async () => {
      during.workersPhase = h.registry.live(worker_id)?.phase;
      during.acceptsConnections = await fetch(`${h.url}/v1/health`).then(
        () => true,
        () => false,
      );
      during.catalogOpen = (() => {
        try {
          h.catalog.list();
          return true;
        } catch {
          return false;
        }
      })();
    });
    spy(h.tracker, "stopAll", "downloads");
    spy(h.catalog, "close", "catalog");

    const result = await h.shutdown.run("test");
    expect(result).toMatchObject({ timedOut: false, failed: [] });
    expect(order.filter((s, i) => order.indexOf(s) === i)).toEqual(["http server", "monitor", "workers", "downloads", "catalog"]);
    // When the workers are stopped, nobody can connect any more, but the catalog is still there.
    expect(during).toEqual({ workersPhase: "running", acceptsConnections: false, catalogOpen: true });
    const final: any = h.registry.get(worker_id);
    expect(final.last_exit).toMatchObject({ reason: "stopped", signal: "SIGKILL" });
    expect(pidAlive(w.pid)).toBe(false);
  });

  test("a spawn that reaches the hive during shutdown is refused with 503 SHUTTING_DOWN", async () => {
    const h = await hive({ workerEnv: { FAKE_WORKER_IGNORE_SIGTERM: "1" }, config: { shutdown: { worker_grace_s: 30 } } });
    const { worker_id } = await h.spawn();
    await h.waitState(worker_id, (x) => x.state === "idle", "idle");
    const stopping = h.shutdown.run("test");
    // The listener is closed by now; a request already on its way is handed to the app directly.
    await waitFor(() => h.registry.live(worker_id)?.phase === "stopping", { what: "workers step under way" });
    const res = await h.server.server.fetch(
      new Request(`${h.url}/v1/workers/spawn`, {
        method: "POST",
        headers: { host: new URL(h.url).host, "content-type": "application/json" },
        body: JSON.stringify({ model_ref: h.modelRef, backend: "cpu", device: 0 }),
      }),
    );
    expect(res.status).toBe(503);
    expect(await res.json()).toEqual({ error: { code: "SHUTTING_DOWN", message: "the hive is shutting down" } });
    // Nothing new was registered; end the wait for the stubborn worker.
    expect(h.registry.list().map((x) => x.id)).toEqual([worker_id]);
    h.shutdown.force();
    await stopping;
  });

  test("a worker that exits on its own during shutdown is not restarted", async () => {
    const h = await hive({ config: { restart: { enabled: true, base_backoff_s: 0, jitter: 0, max_attempts: 10, breaker_failures: 10 } } });
    const { worker_id } = await h.spawn();
    const w = await h.waitState(worker_id, (x) => x.state === "idle", "idle");
    const events: Array<{ type: string; worker_id: unknown }> = [];
    h.bus.subscribe((e) => events.push({ type: e.type, worker_id: "worker_id" in e.data ? e.data.worker_id : undefined }));
    // The worker dies right after shutdown began (while the listener closes), before it is stopped.
    const real = h.server.stop.bind(h.server);
    h.server.stop = async (force?: boolean) => {
      const exited = new Promise<void>((resolve) => h.bus.subscribe((e) => e.type === "exited" && resolve()));
      process.kill(w.pid, "SIGKILL");
      await exited; // the restart decision is taken synchronously with the exit event
      return real(force);
    };
    await h.shutdown.run("test");
    expect(events.filter((e) => e.worker_id === worker_id).map((e) => e.type)).toEqual(["exited", "stopped"]);
    expect(h.registry.get(worker_id)).toMatchObject({ phase: "exited", restart_count: 0, last_exit: { reason: "killed", signal: "SIGKILL" } });
  });
});
