/**
 * Worker processes of this data dir that no saved state names (found by the chaos soak: with
 * keep_workers_on_exit, a worker whose state could not be saved, the disk being full, outlived a
 * SIGKILLed hive and ran on with nobody managing it; the same happens when a damaged state.db is
 * moved aside). The next hive finds them by their output, which is their log file in
 * <data_dir>/logs, and stops them (group SIGTERM, grace, SIGKILL): nothing it cannot manage runs on.
 */
import { afterEach, expect, test } from "bun:test";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { prepareDataDir, startHiveProcess, type HiveProcess } from "./fixtures/hive-process.ts";
import { freePort, groupMembers, killGroup, pidAlive, tempDir, waitFor } from "./helpers.ts";

const cleanups: Array<() => void> = [];
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c();
});

test("keep policy: a worker the saved state does not name is stopped by the next hive, not left running", async () => {
  const dir = tempDir("rbee-strays-");
  const port = freePort();
  const base = 20000 + Math.floor(Math.random() * 40000);
  const { config, modelRef } = prepareDataDir(dir.path, [base, base + 100]);
  const hives: HiveProcess[] = [];
  const groups = new Set<number>();
  cleanups.push(() => {
    for (const h of hives) h.proc.kill("SIGKILL");
    for (const g of groups) killGroup(g);
    dir.cleanup();
  });
  const env = { RBEE_KEEP_WORKERS_ON_EXIT: "true" };
  const h1 = await startHiveProcess({ dataDir: dir.path, port, config, env });
  hives.push(h1);
  const res = await h1.api("/v1/workers/spawn", { json: { model_ref: modelRef, backend: "cpu", device: 0 } });
  expect(res.status).toBe(200);
  const { worker_id: id } = (await res.json()) as { worker_id: string };
  const w = await waitFor(
    async () => {
      const x: any = await (await h1.api(`/v1/workers/${id}`)).json();
      return x.state === "idle" && x.pid ? x : undefined;
    },
    { what: "the worker idle", timeoutMs: 10_000 },
  );
  groups.add(w.pid);
  h1.proc.kill("SIGKILL");
  await h1.exited;
  expect(pidAlive(w.pid)).toBe(true); // kept: it outlived the hive
  // The saved state is lost: a damaged state.db is moved aside and the next hive starts without it.
  for (const f of ["state.db-wal", "state.db-shm"]) rmSync(join(dir.path, f), { force: true });
  writeFileSync(join(dir.path, "state.db"), "not a database");

  const h2 = await startHiveProcess({ dataDir: dir.path, port, config, env });
  hives.push(h2);
  await waitFor(() => !pidAlive(w.pid), { what: "the stray worker stopped", timeoutMs: 10_000 });
  expect(groupMembers(w.pid)).toEqual([]);
  const line = h2.logs().find((l) => l.msg === "stray worker process stopped");
  expect(line).toMatchObject({ level: "warn", pid: w.pid, log_file: join(dir.path, "logs", `${id}.log`) });
  expect(((await (await h2.api("/v1/workers/list")).json()) as any).workers).toEqual([]);
});
