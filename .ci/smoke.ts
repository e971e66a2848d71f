/**
 * Smoke run of the compiled binary, from `/` (it must not depend on the working directory):
 * --version, /v1/health, an hf: model downloaded from the fake hub and served by a fake worker
 * spawned by the binary, then SIGTERM → exit 0 with no worker left (not the worker, not anything
 * in its process group).
 *   bun .ci/smoke.ts <path to binary>
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { FakeHub } from "../test/fixtures/fake-hub.ts";

/** SIGTERM → exit is bounded by shutdown.total_timeout_s (30 s by default); this is the hang guard. */
const EXIT_GUARD_MS = 45_000;

const bin = resolve(process.argv[2] ?? "");
const fakeWorker = resolve(import.meta.dir, "../test/fixtures/fake-worker.ts");
const failures: string[] = [];
const check = (ok: boolean, what: string) => {
  console.log(`${ok ? "ok  " : "FAIL"} ${what}`);
  if (!ok) failures.push(what);
};

/** Members of process group `pgid` that are alive and not zombies (from /proc). */
function groupMembers(pgid: number): number[] {
  const members: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" "); // rest[0] = state, rest[2] = pgrp
      if (Number(rest[2]) === pgid && rest[0] !== "Z") members.push(Number(entry));
    } catch {
      // gone while we looked
    }
  }
  return members;
}

function killGroup(pgid: number): void {
  if (pgid <= 1) return;
  try {
    process.kill(-pgid, "SIGKILL");
  } catch {
    // already gone
  }
}

const version = Bun.spawnSync([bin, "--version"], { cwd: "/" });
check(version.exitCode === 0 && /^rbee-hive \d+\.\d+\.\d+ \(commit (?:[0-9a-f]{7,}(?:-dirty)?|unknown), [a-z]+-[a-z0-9]+(?:-baseline)?\)\n$/.test(version.stdout.toString()), `--version: ${version.stdout.toString().trim()}`);

const hub = await FakeHub.start({ ggufHeaders: true }); // the hive keeps a model's GGUF header: it must be one
hub.addRepo({ id: "smoke/tiny-GGUF", files: [{ path: "tiny.Q4_K_M.gguf", size: 2_000_000, seed: 1 }] });
const dataDir = mkdtempSync(join(tmpdir(), "rbee-smoke-"));
const probe = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
const port = probe.port;
probe.stop(true);
const daemon = Bun.spawn([bin, "daemon", "--addr", `127.0.0.1:${port}`, "--log-format", "json"], {
  cwd: "/",
  env: { ...process.env, RBEE_DATA_DIR: dataDir, HF_ENDPOINT: hub.url, RBEE_WORKER_BINARY: fakeWorker, RBEE_SILENT: "1", LLORCH_API_TOKEN: "" },
  stdout: "ignore",
  stderr: "pipe",
});
const base = `http://127.0.0.1:${port}`;
const getJson = async (path: string) => (await fetch(base + path)).json() as Promise<any>;
let workerPid = 0;

/** Leave nothing behind, however this run ends (an interrupted CI job included). */
function cleanupNow(): void {
  daemon.kill("SIGKILL");
  if (workerPid) killGroup(workerPid);
  rmSync(dataDir, { recursive: true, force: true });
}
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => {
    cleanupNow();
    process.exit(130);
  });
}

try {
  let health: any = null;
  for (let i = 0; i < 100 && !health; i++) {
    health = await getJson("/v1/health").catch(() => null);
    if (!health) await Bun.sleep(100);
  }
  check(health?.status === "alive", `GET /v1/health: ${JSON.stringify(health)}`);
  const spawn: any = await (
    await fetch(base + "/v1/workers/spawn", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model_ref: "hf:smoke/tiny-GGUF", backend: "cpu", device: 0 }),
    })
  ).json();
  check(spawn.state === "loading", `spawn of an hf: model answers at once: ${JSON.stringify(spawn)}`);
  let worker: any = null;
  for (let i = 0; i < 200; i++) {
    worker = await getJson(`/v1/workers/${spawn.worker_id}`);
    if (worker.state === "idle" || worker.phase === "exited") break;
    await Bun.sleep(50);
  }
  workerPid = typeof worker?.pid === "number" ? worker.pid : 0;
  check(worker?.state === "idle", `model downloaded, worker idle (phase ${worker?.phase}, ${worker?.last_exit?.message ?? "no exit"})`);
  check(workerPid > 1 && groupMembers(workerPid).includes(workerPid), `worker process ${workerPid} runs, leading its own process group`);
  const models = await getJson("/v1/models");
  check(models.models?.[0]?.size_bytes === 2_000_000, "catalog holds the downloaded model");
} finally {
  daemon.kill("SIGTERM");
  const code = await Promise.race([daemon.exited, Bun.sleep(EXIT_GUARD_MS).then(() => "no exit" as const)]);
  if (code === "no exit") daemon.kill("SIGKILL");
  check(code === 0, `exit status after SIGTERM: ${code === "no exit" ? `none within ${EXIT_GUARD_MS / 1000} s (SIGKILLed)` : code}`);
  // Without a known worker there is nothing to prove: that is a failure, not a pass.
  const left = workerPid ? groupMembers(workerPid) : null;
  check(left !== null && left.length === 0, `no worker left behind (${left === null ? "no worker pid was seen" : `group ${workerPid}: ${left.length ? left.join(", ") : "empty"}`})`);
  if (failures.length) console.log(await new Response(daemon.stderr).text());
  await hub.stop();
  cleanupNow();
}
process.exit(failures.length ? 1 : 0);
