/**
 * The audit log: hash chain across midnight and restarts, the verifier (function and CLI) naming
 * an edited, removed or reordered line, a torn last line, a full queue on a slow disk, and the
 * daemon writing auth and lifecycle events with LLORCH_AUDIT_MODE=local.
 */
import { afterEach, expect, test } from "bun:test";
import { appendFileSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { AuditLog, GENESIS_HASH, verifyAuditDir, type AuditFile, type OpenAuditFile } from "../src/shared/audit-logging.ts";
import { ManualClock } from "./manual-clock.ts";
import { memoryLogger, ROOT, startTestHive, tempDir, type TestHive } from "./helpers.ts";

const cleanups: Array<() => void | Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function dir(): string {
  const d = tempDir("rbee-audit-");
  cleanups.push(d.cleanup);
  return d.path;
}

const MIDNIGHT = Date.UTC(2026, 4, 2); // 2026-05-02T00:00:00Z
const lines = (path: string) => readFileSync(path, "utf8").trimEnd().split("\n");
const parsed = (path: string) => lines(path).map((l) => JSON.parse(l));

async function writeSome(d: string, clock: ManualClock, events: string[]): Promise<void> {
  const log = await AuditLog.open({ dir: d, queueMax: 100, now: clock.now });
  for (const e of events) {
    await log.record(e, { n: e });
    clock.advance(100);
  }
  await log.close();
}

function cli(...args: string[]) {
  const r = Bun.spawnSync(["bun", join(ROOT, "src/shared/audit-logging.ts"), ...args], { stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode, out: r.stdout.toString() + r.stderr.toString() };
}

test("the chain starts at 64 zeros and continues across midnight and a restart", async () => {
  const d = dir();
  const clock = new ManualClock(MIDNIGHT - 250); // 23:59:59.750
  await writeSome(d, clock, ["a", "b", "c", "d"]); // a, b, c before midnight; d at 00:00:00.050
  await writeSome(d, clock, ["e"]); // a new process on the same dir
  expect(readdirSync(d).sort()).toEqual(["2026-05-01.audit", "2026-05-02.audit"]);
  const day1 = parsed(join(d, "2026-05-01.audit"));
  const day2 = parsed(join(d, "2026-05-02.audit"));
  expect(day1.map((l) => [l.seq, l.event, l.ts])).toEqual([
    [1, "a", "2026-05-01T23:59:59.750Z"],
    [2, "b", "2026-05-01T23:59:59.850Z"],
    [3, "c", "2026-05-01T23:59:59.950Z"],
  ]);
  expect(day2.map((l) => [l.seq, l.event, l.ts])).toEqual([
    [4, "d", "2026-05-02T00:00:00.050Z"],
    [5, "e", "2026-05-02T00:00:00.150Z"],
  ]);
  expect(day1[0].prev_hash).toBe(GENESIS_HASH);
  const all = [...day1, ...day2];
  for (let i = 1; i < all.length; i++) expect(all[i].prev_hash).toBe(all[i - 1].hash);
  // Every line's hash is the SHA-256 of the line without its hash member.
  const first = lines(join(d, "2026-05-01.audit"))[0]!;
  const body = first.replace(/,"hash":"[0-9a-f]{64}"\}$/, "}");
  expect(new Bun.CryptoHasher("sha256").update(body).digest("hex")).toBe(day1[0].hash);
  expect(first).toBe(`{"seq":1,"ts":"2026-05-01T23:59:59.750Z","event":"a","n":"a","prev_hash":"${GENESIS_HASH}","hash":"${day1[0].hash}"}`);
  expect(verifyAuditDir(d)).toEqual({ ok: true, files: 2, lines: 5, last_seq: 5 });
  expect(cli("verify", d)).toEqual({ code: 0, out: "audit log intact: 5 lines in 2 files, last seq 5\n" });
});

/** A dir with 6 lines over two days; `tamper` changes the files, the verdict names the line. */
async function tampered(tamper: (day1: string[], day2: string[]) => [string[], string[]]) {
  const d = dir();
  const clock = new ManualClock(MIDNIGHT - 350);
  await writeSome(d, clock, ["a", "b", "c", "d", "e", "f"]); // a–d on day 1, e–f on day 2
  const p1 = join(d, "2026-05-01.audit");
  const p2 = join(d, "2026-05-02.audit");
  const [n1, n2] = tamper(lines(p1), lines(p2));
  writeFileSync(p1, n1.join("\n") + "\n");
  writeFileSync(p2, n2.join("\n") + "\n");
  return { verdict: verifyAuditDir(d), cli: cli("verify", d) };
}

test("the verifier names an edited line", async () => {
  const { verdict, cli: c } = await tampered((a, b) => [a.map((l, i) => (i === 2 ? l.replace('"n":"c"', '"n":"x"') : l)), b]);
  expect(verdict).toMatchObject({ ok: false, problem: "edited", file: "2026-05-01.audit", line: 3, message: "line 3 of 2026-05-01.audit was edited: its content does not match its hash" });
  expect(c).toEqual({ code: 1, out: "audit log broken: line 3 of 2026-05-01.audit was edited: its content does not match its hash\n" });
});

test("the verifier names a line edited with its own hash recomputed (the next line's prev_hash gives it away)", async () => {
  const { verdict } = await tampered((a, b) => {
    const edited = JSON.parse(a[1]!);
    edited.n = "forged";
    delete edited.hash;
    const body = JSON.stringify(edited);
    const hash = new Bun.CryptoHasher("sha256").update(body).digest("hex");
    return [a.map((l, i) => (i === 1 ? `${body.slice(0, -1)},"hash":"${hash}"}` : l)), b];
  });
  expect(verdict).toMatchObject({ ok: false, problem: "edited", file: "2026-05-01.audit", line: 2, seq: 2 });
});

test("the verifier names where a line was removed", async () => {
  const { verdict, cli: c } = await tampered((a, b) => [a.filter((_, i) => i !== 1), b]);
  expect(verdict).toMatchObject({ ok: false, problem: "removed", file: "2026-05-01.audit", line: 2, seq: 3, message: "lines were removed before line 2 of 2026-05-01.audit (seq 3): seq 2 is missing" });
  expect(c.code).toBe(1);
  expect(c.out).toBe("audit log broken: lines were removed before line 2 of 2026-05-01.audit (seq 3): seq 2 is missing\n");
});

test("the verifier names a reordered line, also across files", async () => {
  const swapped = await tampered((a, b) => [[a[0]!, a[2]!, a[1]!, a[3]!], b]);
  expect(swapped.verdict).toMatchObject({ ok: false, problem: "reordered", file: "2026-05-01.audit", line: 2, seq: 3, message: "line 2 of 2026-05-01.audit (seq 3) was reordered: seq 2 comes later in the log" });
  const moved = await tampered((a, b) => [a.slice(0, 3), [a[3]!, ...b].reverse()]);
  expect(moved.verdict).toMatchObject({ ok: false, problem: "reordered", file: "2026-05-02.audit", line: 1, seq: 6 });
  const lastFirst = await tampered((a, b) => [a, [b[1]!, b[0]!]]);
  expect(lastFirst.verdict).toMatchObject({ ok: false, problem: "reordered", file: "2026-05-02.audit", line: 1, seq: 6 });
});

test("a partial last line left by a crash is cut off and the chain continues intact", async () => {
  const d = dir();
  const clock = new ManualClock(MIDNIGHT + 1000);
  await writeSome(d, clock, ["a", "b"]);
  appendFileSync(join(d, "2026-05-02.audit"), '{"seq":3,"ts":"2026-05-02T00:00:01.2');
  const logger = memoryLogger();
  const log = await AuditLog.open({ dir: d, queueMax: 10, now: clock.now, logger });
  await log.record("c", {});
  await log.close();
  expect(parsed(join(d, "2026-05-02.audit")).map((l) => [l.seq, l.event])).toEqual([[1, "a"], [2, "b"], [3, "c"]]);
  expect(verifyAuditDir(d)).toEqual({ ok: true, files: 1, lines: 3, last_seq: 3 });
  expect(logger.lines.map((l) => JSON.parse(l).msg)).toEqual(["audit log: removed a partial last line left by a crash"]);
});

test("a slow disk never blocks: past queue_max events are dropped, logged and counted, and the gap is recorded", async () => {
  const d = dir();
  // Writes wait for the test to open the gate: a disk that does not keep up.
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  const slow: OpenAuditFile = async (path) => {
    const real = await realFile(path);
    return {
      write: async (t) => {
        await gate;
        return real.write(t);
      },
      datasync: () => real.datasync(),
      close: () => real.close(),
    };
  };
  const dropped: string[] = [];
  const logger = memoryLogger();
  const log = await AuditLog.open({ dir: d, queueMax: 2, logger, openFile: slow, onDropped: (e) => dropped.push(e) });
  const first = log.record("one", {}); // taken by the writer, held at the gate
  await Bun.sleep(0);
  const queued = [log.record("two", {}), log.record("three", {})];
  expect(log.record("four", {})).toBeNull();
  expect(log.record("five", { security: true }, { security: true })).toBeNull();
  expect(dropped).toEqual(["four", "five"]);
  expect(logger.lines.map((l) => JSON.parse(l))).toEqual([
    expect.objectContaining({ level: "warn", msg: "audit queue full: events are being dropped until the disk catches up", queue_max: 2, event: "four" }),
  ]);
  open();
  await Promise.all([first, ...queued]);
  await log.record("six", {}); // the queue has room: the gap is written into the chain first
  await log.close();
  const events = readdirSync(d).flatMap((f) => parsed(join(d, f))).map((l) => (l.event === "audit_dropped" ? `dropped ${l.count}` : l.event));
  expect(events).toEqual(["one", "two", "three", "dropped 2", "six"]);
  expect(verifyAuditDir(d)).toMatchObject({ ok: true, lines: 5 });
});

async function realFile(path: string): Promise<AuditFile> {
  const { open } = await import("node:fs/promises");
  const h = await open(path, "a");
  return { write: (t) => h.write(t), datasync: () => h.datasync(), close: () => h.close() };
}

test("the daemon audits auth decisions (flushed before the answer), worker lifecycle, config and shutdown", async () => {
  const token = "audit-token-0123456789abcdef";
  const h: TestHive = await startTestHive({ token, env: { LLORCH_AUDIT_MODE: "local" } });
  cleanups.push(() => h.close());
  const auditDir = join(h.dataDir, "audit");
  const audited = () => readdirSync(auditDir).sort().flatMap((f) => parsed(join(auditDir, f)));

  const ok = await h.api("/v1/workers/list", { headers: { "x-correlation-id": "corr-ok-1" } });
  expect(ok.status).toBe(200);
  expect(ok.headers.get("x-correlation-id")).toBe("corr-ok-1");
  // On disk by the time the answer arrived: no waiting here.
  expect(audited().filter((l) => l.event === "auth_success")).toEqual([
    expect.objectContaining({ method: "GET", path: "/v1/workers/list", token: expect.stringMatching(/^token:[0-9a-f]{6}$/), correlation_id: "corr-ok-1" }),
  ]);
  const denied = await h.api("/v1/workers/list", { auth: false, headers: { authorization: "Bearer wrong-token-000000000" } });
  expect(denied.status).toBe(401);
  const failure = audited().filter((l) => l.event === "auth_failure");
  expect(failure).toEqual([expect.objectContaining({ method: "GET", path: "/v1/workers/list", reason: "INVALID_API_KEY", correlation_id: denied.headers.get("x-correlation-id") })]);

  const { worker_id } = await h.spawn();
  await h.waitState(worker_id, (w) => w.state === "idle", "idle");
  expect((await h.api(`/v1/workers/${worker_id}`, { method: "DELETE" })).status).toBe(200);
  expect((await h.api(`/v1/models?model_ref=${encodeURIComponent(h.modelRef)}`, { method: "DELETE" })).status).toBe(200);
  await h.shutdown.run("test done"); // close() would remove the data dir with the log in it

  const events = audited().map((l) => l.event).filter((e) => e !== "auth_success");
  expect(events).toEqual(["config_loaded", "auth_failure", "worker_spawned", "worker_ready", "worker_exited", "worker_stopped", "model_deleted", "shutdown"]);
  const all = audited();
  expect(all[0]).toMatchObject({ seq: 1, event: "config_loaded", audit_mode: "local", prev_hash: GENESIS_HASH });
  expect(all.find((l) => l.event === "model_deleted")).toMatchObject({ model_ref: h.modelRef, freed_bytes: 0 });
  expect(all.at(-1)).toMatchObject({ event: "shutdown", reason: "test done", workers_total: 0 });
  expect(readdirSync(auditDir).map((f) => readFileSync(join(auditDir, f), "utf8")).join("")).not.toContain(token);
  expect(verifyAuditDir(auditDir)).toMatchObject({ ok: true, lines: all.length });
});

/** A disk whose fdatasync waits until the test opens it. */
function gatedSync() {
  let open!: () => void;
  const gate = new Promise<void>((r) => (open = r));
  const state = { syncs: 0 };
  const openFile: OpenAuditFile = async (path) => {
    const real = await realFile(path);
    return {
      write: (t) => real.write(t),
      datasync: async () => {
        state.syncs++;
        await gate;
        return real.datasync();
      },
      close: () => real.close(),
    };
  };
  return { openFile, open, state };
}

test("an authenticated request is answered only once its audit line is synced, at most flush_timeout_s later", async () => {
  const token = "audit-token-0123456789abcdef";
  const disk = gatedSync();
  const h = await startTestHive({ token, env: { LLORCH_AUDIT_MODE: "local" }, config: { audit: { flush_timeout_s: 60 } }, overrides: { auditFile: disk.openFile } });
  cleanups.push(() => h.close());
  cleanups.push(() => disk.open()); // runs first: the shutdown's own sync must not wait on the gate
  const answer = h.api("/v1/workers/list");
  await waitUntil(() => disk.state.syncs === 1, "the auth line's fdatasync");
  await Bun.sleep(50);
  expect(Bun.peek.status(answer)).toBe("pending"); // written, not yet synced: no answer
  disk.open();
  expect((await answer).status).toBe(200);

  const slow = gatedSync();
  const s = await startTestHive({ token, env: { LLORCH_AUDIT_MODE: "local" }, config: { audit: { flush_timeout_s: 0.2 } }, overrides: { auditFile: slow.openFile } });
  cleanups.push(() => s.close());
  cleanups.push(() => slow.open());
  expect((await s.api("/v1/workers/list")).status).toBe(200); // the disk never syncs: answered after 0.2 s
  expect(s.logs.map((l) => JSON.parse(l)).filter((l) => l.level === "warn").map((l) => l.msg)).toEqual(["audit line not on disk within flush_timeout_s; answering anyway"]);
  expect(await (await s.api("/metrics", { auth: false })).text()).toContain("\nrbee_hive_audit_slow_flushes_total 1\n");
});

async function waitUntil(fn: () => boolean, what: string): Promise<void> {
  const until = performance.now() + 5000;
  while (!fn()) {
    if (performance.now() > until) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(5);
  }
}
