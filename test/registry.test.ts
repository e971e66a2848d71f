/** The worker registry: the one place a worker changes, read through frozen snapshots. */
import { describe, expect, test } from "bun:test";
import { isValidTransition, MAX_EXIT_HISTORY, newWorkerRecord, WorkerRegistry, type RegistryChange } from "../src/workers/registry.ts";
import type { WorkerExit } from "../src/workers/schemas.ts";
import { toSystemTime, type WorkerState } from "../src/shared/rbee-types.ts";
import { memoryLogger } from "./helpers.ts";

const T0 = 1_800_000_000_000;

function setup(retentionMs = 60_000) {
  let now = T0;
  const logger = memoryLogger();
  const registry = new WorkerRegistry(logger, () => now, retentionMs);
  const changes: RegistryChange[] = [];
  registry.onChange((c) => changes.push(c));
  const add = (id = "worker-a") =>
    registry.add(newWorkerRecord({ id, url: "http://127.0.0.1:9300", model_ref: "file:/m.gguf", backend: "cpu", device: 0, port: 9300, profile: "p", phase: "spawning", now }));
  return { registry, changes, logger, add, advance: (ms: number) => (now += ms) };
}

const exit = (message: string): WorkerExit => ({ reason: "crashed", code: 1, signal: null, message, stderr_tail: ["boom"], at: toSystemTime(T0) });

describe("snapshots", () => {
  test("readers get frozen records, nested objects included: a write throws and changes nothing", () => {
    const { registry, add } = setup();
    add();
    registry.recordExit("worker-a", exit("first"));
    const [w] = registry.list() as any[];
    expect(Object.isFrozen(w)).toBe(true);
    expect(() => (w.phase = "running")).toThrow(TypeError);
    expect(() => (w.last_exit.message = "forged")).toThrow(TypeError);
    expect(() => (w.exits[0].reason = "stopped")).toThrow(TypeError);
    expect(() => (w.started_at.secs_since_epoch = 0)).toThrow(TypeError);
    expect(registry.get("worker-a")).toMatchObject({ phase: "spawning", exits: [{ message: "first", reason: "crashed" }] });
  });

  test("arrays in a snapshot are read-only by type (frozen arrays would slow down JSON)", () => {
    // Never called: the type check (tsc) fails if any of these writes compiles.
    const writes = (registry: WorkerRegistry) => {
      const w = registry.live("worker-a")!;
      // @ts-expect-error exits is read-only
      w.exits.push(exit("forged"));
      // @ts-expect-error stderr_tail is read-only
      w.last_exit?.stderr_tail.push("forged");
      // @ts-expect-error fields are read-only
      w.phase = "running";
    };
    expect(typeof writes).toBe("function");
  });

  test("a snapshot a reader holds stays as it was; the next read sees the change", () => {
    const { registry, add } = setup();
    const before = add();
    registry.update("worker-a", { phase: "starting", pid: 42 });
    expect(before).toMatchObject({ phase: "spawning", pid: null });
    expect(registry.live("worker-a")).toMatchObject({ phase: "starting", pid: 42 });
    expect(registry.list()).toEqual([registry.live("worker-a")!]);
  });
});

describe("one change point", () => {
  test("every change reaches onChange with the new snapshot, recordExit and removals included", () => {
    const { registry, changes, add } = setup();
    add("worker-a");
    add("worker-b");
    registry.update("worker-a", { phase: "starting" });
    expect(registry.transition("worker-a", "idle", { phase: "running" })).toBe(true);
    registry.recordExit("worker-a", exit("crashed once"));
    registry.retire("worker-a");
    registry.recordExit("worker-a", exit("kept on the final record"));
    registry.discard("worker-b");
    expect(changes.map((c) => [c.kind, c.worker.id, c.worker.state, c.worker.phase, c.worker.exits.length])).toEqual([
      ["added", "worker-a", "loading", "spawning", 0],
      ["added", "worker-b", "loading", "spawning", 0],
      ["updated", "worker-a", "loading", "starting", 0],
      ["updated", "worker-a", "idle", "running", 0],
      ["updated", "worker-a", "idle", "running", 1],
      ["removed", "worker-a", "idle", "exited", 1],
      ["updated", "worker-a", "idle", "exited", 2],
      ["removed", "worker-b", "loading", "spawning", 0],
    ]);
    for (const c of changes) expect(Object.isFrozen(c.worker)).toBe(true);
    expect(registry.get("worker-a")?.last_exit?.message).toBe("kept on the final record");
    expect(registry.get("worker-b")).toBeUndefined(); // discarded: no final record
    expect(registry.list()).toEqual([]);
  });

  test("a change to an unknown worker is no change", () => {
    const { registry, changes } = setup();
    expect(registry.update("worker-x", { phase: "running" })).toBeUndefined();
    expect(registry.transition("worker-x", "idle")).toBe(false);
    registry.recordExit("worker-x", exit("nobody"));
    expect(registry.retire("worker-x")).toBeUndefined();
    registry.discard("worker-x");
    expect(changes).toEqual([]);
  });

  test("the exit history keeps the newest ones", () => {
    const { registry, add } = setup();
    add();
    for (let i = 1; i <= MAX_EXIT_HISTORY + 2; i++) registry.recordExit("worker-a", exit(`exit ${i}`));
    const w = registry.get("worker-a")!;
    expect(w.exits.map((e) => e.message)).toEqual(Array.from({ length: MAX_EXIT_HISTORY }, (_, i) => `exit ${i + 3}`));
    expect(w.last_exit?.message).toBe(`exit ${MAX_EXIT_HISTORY + 2}`);
  });

  test("a retired record stays readable for the retention time, then is gone", () => {
    const { registry, add, advance } = setup(1000);
    add();
    expect(registry.retire("worker-a")).toMatchObject({ id: "worker-a", phase: "exited", pid: null });
    expect(registry.live("worker-a")).toBeUndefined();
    advance(999);
    expect(registry.get("worker-a")?.phase).toBe("exited");
    advance(1);
    expect(registry.get("worker-a")).toBeUndefined();
  });
});

describe("state transitions", () => {
  test("the table: loading → idle, idle ↔ busy, idle/busy → loading; staying is allowed", () => {
    const states: WorkerState[] = ["loading", "idle", "busy"];
    const allowed = states.flatMap((from) => states.filter((to) => isValidTransition(from, to)).map((to) => `${from}→${to}`));
    expect(allowed).toEqual(["loading→loading", "loading→idle", "idle→loading", "idle→idle", "idle→busy", "busy→loading", "busy→idle", "busy→busy"]);
  });

  test("a transition the table refuses is logged as a bug and applied to nothing", () => {
    const { registry, changes, logger, add } = setup();
    add();
    expect(registry.transition("worker-a", "busy", { phase: "running" })).toBe(false);
    expect(registry.live("worker-a")).toMatchObject({ state: "loading", phase: "spawning" });
    expect(changes.map((c) => c.kind)).toEqual(["added"]);
    const logged = logger.lines.map((l) => JSON.parse(l)).filter((l) => l.msg === "invalid worker state transition (bug)");
    expect(logged).toMatchObject([{ level: "error", worker_id: "worker-a", from: "loading", to: "busy" }]);
  });
});
