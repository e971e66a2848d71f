import { describe, expect, test } from "bun:test";
import { ShutdownCoordinator } from "../src/shutdown.ts";
import { memoryLogger, startTestHive } from "./helpers.ts";

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

  test("the total time is bounded: a hanging step triggers the force steps", async () => {
    const s = new ShutdownCoordinator(memoryLogger(), 100);
    let forced = false;
    s.register("hang", () => new Promise(() => {}));
    s.registerForce(() => {
      forced = true;
    });
    const started = performance.now();
    const result = await s.run("test");
    expect(performance.now() - started).toBeLessThan(500);
    expect(result.timedOut).toBe(true);
    expect(forced).toBe(true);
  });
});

describe("hive shutdown", () => {
  test("open event streams end, workers stop, the catalog is closed", async () => {
    const h = await startTestHive();
    const { worker_id } = await h.spawn();
    const w = await h.waitState(worker_id, (x) => x.state === "idle", "idle");
    const res = await h.api("/v1/events");
    const reader = res.body!.getReader();
    await reader.read(); // stream is open
    const done = (async () => {
      for (;;) if ((await reader.read()).done) return true;
    })();
    await h.shutdown.run("test");
    expect(await Promise.race([done, Bun.sleep(1000).then(() => false)])).toBe(true);
    expect(() => process.kill(w.pid, 0)).toThrow();
    expect(() => h.catalog.list()).toThrow();
    await h.close();
  });
});
