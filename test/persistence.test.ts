/**
 * The pieces that let the hive survive a restart, each on its own with real files and processes:
 * /proc/<pid>/stat parsing, following a log file, noticing the exit of a process that is not our
 * child, the state file (lock, damage), worker rows written through the registry, file-output and
 * adopted children of the supervisor, and saved download jobs.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { appendFileSync, closeSync, existsSync, mkdirSync, openSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { adoptProcess, spawnSupervised, type SupervisedChild } from "../src/shared/daemon-lifecycle.ts";
import { watchExit } from "../src/shared/exit-watch.ts";
import { followFile, lastLines, MAX_BACKLOG_BYTES, SKIP_KEEP_BYTES } from "../src/shared/log-follower.ts";
import { identify, parseProcStat, readProcStat } from "../src/shared/proc-stat.ts";
import { openStateDb, StateInUseError } from "../src/shared/state-db.ts";
import { persistWorkers, WORKERS_SCHEMA, WorkerStore } from "../src/workers/persistence.ts";
import { newWorkerRecord, WorkerRegistry } from "../src/workers/registry.ts";
import { DOWNLOADS_SCHEMA, SqliteDownloadJobStore } from "../src/models/download-tracker/job-store.ts";
import { DownloadTracker } from "../src/models/download-tracker.ts";
import { ModelCatalog, parseModelRef } from "../src/models/model-catalog/index.ts";
import { Provisioner } from "../src/models/provisioner/index.ts";
import { FakeHub } from "./fixtures/fake-hub.ts";
import { killGroup, memoryLogger, modelDefaults, pidAlive, rejection, tempDir, waitFor } from "./helpers.ts";

const cleanups: Array<() => void | Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function dir(): string {
  const d = tempDir("rbee-persist-");
  cleanups.push(d.cleanup);
  return d.path;
}

function detached(argv: string[]) {
  const p = Bun.spawn(argv, { detached: true, stdin: "ignore", stdout: "ignore", stderr: "ignore" });
  cleanups.push(() => killGroup(p.pid));
  return p;
}

describe("proc-stat", () => {
  test("parses the fields after the command name, whatever the name holds", () => {
    const line = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654321 1000 10 18446744073709551615";
    expect(parseProcStat(line)).toEqual({ pid: 4242, state: "S", ppid: 1, pgrp: 4242, startTime: "987654321" });
    expect(parseProcStat("garbage")).toBeNull();
  });

  test("identify: the same process, another one with the pid, or none", () => {
    const me = readProcStat(process.pid)!;
    expect(identify(process.pid, me.startTime)).toBe("same");
    expect(identify(process.pid, String(BigInt(me.startTime) + 1n))).toBe("other");
    expect(identify(2 ** 22 + 12345, me.startTime)).toBe("gone");
  });
});

describe("log follower", () => {
  test("delivers appended lines as they come, a line split across writes once, the last partial line at close", async () => {
    const path = join(dir(), "w.log");
    writeFileSync(path, "old line\n");
    const lines: string[] = [];
    const f = followFile({ path, from: "end", onLine: (l) => lines.push(l) });
    appendFileSync(path, "one\ntw");
    await waitFor(() => lines.length === 1, { what: "first line" });
    appendFileSync(path, "o\r\nthree");
    await waitFor(() => lines.length === 2, { what: "second line" });
    expect(lines).toEqual(["one", "two"]);
    f.close();
    expect(lines).toEqual(["one", "two", "three"]);
  });

  test("a flood is not chased byte by byte: it jumps to the end and says how much it skipped", () => {
    const path = join(dir(), "flood.log");
    writeFileSync(path, "");
    const lines: string[] = [];
    let skipped = 0;
    const f = followFile({ path, from: 0, onLine: (l) => lines.push(l), onSkip: (n) => (skipped += n) });
    const line = "x".repeat(1023) + "\n";
    const total = MAX_BACKLOG_BYTES + 64 * 1024;
    appendFileSync(path, line.repeat(total / 1024));
    f.drain();
    expect(skipped).toBe(total - SKIP_KEEP_BYTES);
    expect(lines).toHaveLength(SKIP_KEEP_BYTES / 1024);
    f.close();
  });

  test("lastLines reads only the end of a file", () => {
    const path = join(dir(), "tail.log");
    writeFileSync(path, Array.from({ length: 1000 }, (_, i) => `line ${i}`).join("\n") + "\n");
    expect(lastLines(path, 3)).toEqual(["line 997", "line 998", "line 999"]);
    expect(lastLines(path, 2, 20)).toEqual(["line 998", "line 999"]);
    expect(lastLines(join(dir(), "missing.log"), 3)).toEqual([]);
  });
});

describe("exit watch (a process that is not our child)", () => {
  test("a zombie nobody reaps counts as exited", async () => {
    // The shell starts a short sleep, then becomes a long one that never reaps it.
    const p = Bun.spawn(["sh", "-c", "sleep 0.1 & echo $!; exec sleep 30"], { detached: true, stdout: "pipe", stderr: "ignore" });
    cleanups.push(() => killGroup(p.pid));
    const reader = (p.stdout as ReadableStream<Uint8Array>).getReader();
    const pid = Number(new TextDecoder().decode((await reader.read()).value).trim());
    const st = readProcStat(pid)!;
    const watch = watchExit(pid, st.startTime);
    await watch.exited;
    expect(readProcStat(pid)?.state).toBe("Z");
  });

  test("a reaped process counts as exited, a running one does not; a wrong start time means it is not there", async () => {
    const dies = detached(["sleep", "30"]);
    const lives = detached(["sleep", "30"]);
    const watchDies = watchExit(dies.pid, readProcStat(dies.pid)!.startTime);
    const watchLives = watchExit(lives.pid, readProcStat(lives.pid)!.startTime);
    let livesDone = false;
    void watchLives.exited.then(() => (livesDone = true));
    dies.kill("SIGKILL");
    await watchDies.exited; // the round that saw it gone checked the other one too
    expect(livesDone).toBe(false);
    watchLives.cancel();
    expect(await watchExit(process.pid, "1").exited).toBeNumber();
  });
});

describe("state file", () => {
  test("a second opener is refused while the first holds it; a damaged file is moved aside", () => {
    const path = join(dir(), "state.db");
    const first = openStateDb(path, [WORKERS_SCHEMA], memoryLogger());
    expect(() => openStateDb(path, [WORKERS_SCHEMA], memoryLogger())).toThrow(StateInUseError);
    first.close();
    openStateDb(path, [WORKERS_SCHEMA], memoryLogger()).close();

    const damaged = join(dir(), "state.db");
    writeFileSync(damaged, "this is not a database, just sixteen+ bytes of text");
    const logger = memoryLogger();
    openStateDb(damaged, [WORKERS_SCHEMA], logger, () => 1234).close();
    expect(existsSync(`${damaged}.corrupt-1234`)).toBe(true);
    expect(JSON.parse(logger.lines[0]!).msg).toBe(`hive state ${damaged} is damaged; moved it to ${damaged}.corrupt-1234 and started without saved workers and downloads`);
  });
});

describe("worker rows", () => {
  test("every change of a live worker is written through; the process is named by pid, group and start time; gone workers leave", () => {
    const db = openStateDb(join(dir(), "state.db"), [WORKERS_SCHEMA], memoryLogger());
    cleanups.push(() => db.close());
    const store = new WorkerStore(db.db, () => 42);
    const registry = new WorkerRegistry(memoryLogger(), () => 1000, 60_000);
    persistWorkers(registry, store, memoryLogger());
    const rec = newWorkerRecord({ id: "w1", url: "http://h:9", model_ref: "file:/m", backend: "cpu", device: 0, port: 9, profile: "p", phase: "spawning", now: 1000 });
    registry.add(rec);
    expect(store.list()).toEqual([{ record: rec, process: null, hivePid: process.pid }]);
    registry.update("w1", { pid: process.pid, phase: "starting" });
    const me = readProcStat(process.pid)!;
    expect(store.list()).toEqual([{ record: { ...rec, pid: process.pid, phase: "starting" }, process: { pid: process.pid, pgid: me.pgrp, startTime: me.startTime }, hivePid: process.pid }]);
    const row = db.db.query("SELECT pid, pgid, start_time, port, url, model_ref, backend, device, profile, slots_total, slots_available, restart_count, state, phase, updated_at FROM workers").get();
    expect(row).toEqual({ pid: process.pid, pgid: me.pgrp, start_time: me.startTime, port: 9, url: "http://h:9", model_ref: "file:/m", backend: "cpu", device: 0, profile: "p", slots_total: 1, slots_available: 0, restart_count: 0, state: "loading", phase: "starting", updated_at: 42 });
    registry.retire("w1");
    expect(store.list()).toEqual([]);
  });

  test("a change of request activity alone is batched; anything that names or places the worker is written at once", async () => {
    const db = openStateDb(join(dir(), "state.db"), [WORKERS_SCHEMA], memoryLogger());
    cleanups.push(() => db.close());
    let now = 1;
    const store = new WorkerStore(db.db, () => now++);
    const registry = new WorkerRegistry(memoryLogger(), () => 1000, 60_000);
    const stop = persistWorkers(registry, store, memoryLogger());
    const rec = newWorkerRecord({ id: "w1", url: "http://h:9", model_ref: "file:/m", backend: "cpu", device: 0, port: 9, profile: "p", phase: "running", now: 1000 });
    registry.add(rec);
    registry.transition("w1", "idle", { slots_available: 1 });
    const writes = () => (db.db.query("SELECT updated_at FROM workers").get() as { updated_at: number }).updated_at;
    const afterReady = writes();
    // A request starts and ends: slots, state and activity move, nothing durable does.
    registry.transition("w1", "busy", { slots_available: 0, in_flight: 1 });
    registry.transition("w1", "idle", { slots_available: 1, in_flight: 0, last_activity: { secs_since_epoch: 2, nanos_since_epoch: 0 } });
    expect(writes()).toBe(afterReady);
    // A restart counter is durable: written at once, with the activity that came before it.
    registry.update("w1", { restart_count: 1 });
    expect(writes()).toBe(afterReady + 1);
    expect(store.list()[0]!.record).toMatchObject({ restart_count: 1, last_activity: { secs_since_epoch: 2, nanos_since_epoch: 0 } });
    // Activity alone is still saved, within a second, and at the latest when persisting stops.
    registry.update("w1", { last_activity: { secs_since_epoch: 3, nanos_since_epoch: 0 } });
    stop();
    expect(store.list()[0]!.record.last_activity).toEqual({ secs_since_epoch: 3, nanos_since_epoch: 0 });
  });
});

describe("supervisor: output into the log file, adoption", () => {
  test("the log file is the child's stdout and stderr, followed for the ring, the echo and onOutput", async () => {
    const log = join(dir(), "logs", "c.log");
    const echoed: string[] = [];
    const seen: string[] = [];
    const child = spawnSupervised({
      id: "c",
      command: ["sh", "-c", "echo out-1; echo err-1 >&2; echo out-2"],
      logFile: log,
      outputToLogFile: true,
      echo: (l) => echoed.push(l),
      onOutput: (_s, l) => seen.push(l),
    });
    cleanups.push(() => killGroup(child.pid));
    expect(await child.exited).toEqual({ code: 0, signal: null, requested: false, at: expect.any(Number) });
    expect(await Bun.file(log).text()).toBe("out-1\nerr-1\nout-2\n");
    expect(child.tail(10)).toEqual(["out-1", "err-1", "out-2"]);
    expect(child.tail(10, "stderr")).toEqual(["out-1", "err-1", "out-2"]); // one file: the streams are one
    expect(echoed).toEqual(["[c] out-1", "[c] err-1", "[c] out-2"]);
    expect(seen).toEqual(["out-1", "err-1", "out-2"]);
  });

  test("an adopted process: its log's last lines, its new lines, stop() on its group, the exit marked adopted", async () => {
    const log = join(dir(), "a.log");
    writeFileSync(log, "before 1\nbefore 2\n");
    // Stands in for a worker a previous hive started: it leads its group and writes into its log.
    const out = openSync(log, "a");
    const p = Bun.spawn(["sh", "-c", "sleep 30 & while true; do echo tick; sleep 0.05; done"], { detached: true, stdout: out, stderr: "ignore" });
    closeSync(out);
    cleanups.push(() => killGroup(p.pid));
    const members = () => readdirSync("/proc").filter((e) => /^\d+$/.test(e) && readProcStat(Number(e))?.pgrp === p.pid && readProcStat(Number(e))?.state !== "Z");
    await waitFor(() => members().length >= 2, { what: "the stand-in and its grandchild" });
    const child: SupervisedChild = adoptProcess({ id: "a", pid: p.pid, pgid: p.pid, startTime: readProcStat(p.pid)!.startTime, logFile: log, ringLines: 50 });
    expect(child.adopted).toBe(true);
    expect(child.tail(50).slice(0, 2)).toEqual(["before 1", "before 2"]); // the ring starts with the file's last lines
    await waitFor(() => child.tail(50).filter((l) => l === "tick").length >= 2, { what: "new lines followed" });
    const exit = await child.stop(1000);
    expect(exit).toEqual({ code: null, signal: null, requested: true, at: expect.any(Number), adopted: true });
    expect(child.exit).toBe(exit);
    await waitFor(() => members().length === 0, { what: "the whole group gone" });
    expect(pidAlive(p.pid)).toBe(false);
  });

  test("a child whose pid now names another process is never signalled", async () => {
    const p = detached(["sleep", "30"]);
    const child = adoptProcess({ id: "x", pid: p.pid, pgid: p.pid, startTime: "1" });
    expect(await child.exited).toMatchObject({ adopted: true, requested: false });
    child.signal("SIGTERM");
    await child.stop(0);
    expect(pidAlive(p.pid)).toBe(true);
  });
});

describe("saved download jobs", () => {
  test("a job interrupted by the shutdown stays saved and resumes under its id; finished jobs leave", async () => {
    const root = dir();
    const hub = await FakeHub.start({ chunkBytes: 32 * 1024 });
    cleanups.push(() => hub.stop());
    hub.addRepo({ id: "org/m-GGUF", files: [{ path: "m.Q4_K_M.gguf", size: 1_000_000, seed: 3 }] });
    hub.addFault({ kind: "stall", atByte: 500_000, on: "cdn", ms: 60_000 });
    const db = openStateDb(join(root, "state.db"), [DOWNLOADS_SCHEMA], memoryLogger());
    cleanups.push(() => db.close());
    const store = new SqliteDownloadJobStore(db.db);
    const catalog = new ModelCatalog({ path: join(root, "models.db") });
    cleanups.push(() => catalog.close());
    mkdirSync(join(root, "models"));
    const tracker = () =>
      new DownloadTracker({
        ...modelDefaults().tracker,
        catalog,
        store,
        provisioner: new Provisioner({ ...modelDefaults().provisioner, modelsDir: join(root, "models"), endpoint: hub.url, diskMarginBytes: 0 }),
      });

    const first = tracker();
    const started = await first.start(parseModelRef("hf:org/m-GGUF"));
    if (started.cached) throw new Error("not cached yet");
    const id = started.job.id;
    expect(store.list()).toEqual([{ id, model_ref: "hf:org/m-GGUF", revision: "main", revision_arg: null, started_at: expect.any(Number) }]);
    await waitFor(() => hub.stalledCount === 1, { what: "transfer stalled" });
    await first.stopAll();
    expect((await rejection(first.whenDone(id))).code).toBe("HIVE_SHUTTING_DOWN");
    expect(store.list().map((j) => j.id)).toEqual([id]);
    hub.releaseStalls();

    const second = tracker();
    expect(second.resumeSaved().map((j) => [j.id, j.model_ref])).toEqual([[id, "hf:org/m-GGUF"]]);
    const entry = await second.whenDone(id);
    expect(entry.model_ref).toBe("hf:org/m-GGUF");
    expect(store.list()).toEqual([]);
    expect(tracker().resumeSaved()).toEqual([]);
  });
});
