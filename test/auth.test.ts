import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import type { Subprocess } from "bun";
import {
  bindPolicyViolation,
  checkBearer,
  parseBearer,
  tokenFingerprint,
  tokensEqual,
} from "../src/shared/auth-min.ts";
import { createApp } from "../src/app.ts";
import { serve, type HiveServer } from "../src/server.ts";
import { defaultConfig, exitWithin, freePort, memoryLogger, MAIN, tempDir, waitFor } from "./helpers.ts";

const TOKEN = "s3cret-token-0123456789";

describe("auth-min", () => {
  test("Bearer prefix is case-sensitive and the token non-empty", () => {
    expect(parseBearer(`Bearer ${TOKEN}`)).toEqual({ ok: true, token: TOKEN });
    expect(parseBearer(`bearer ${TOKEN}`).ok).toBe(false);
    expect(parseBearer(`BEARER ${TOKEN}`).ok).toBe(false);
    expect(parseBearer("Bearer ").ok).toBe(false);
    expect(parseBearer("Bearer    ").ok).toBe(false);
    expect(parseBearer(`Basic ${TOKEN}`).ok).toBe(false);
    expect(parseBearer(null).ok).toBe(false);
    expect(parseBearer("Bearer " + "a".repeat(5000)).ok).toBe(false);
  });

  test("compare and fingerprint", () => {
    expect(tokensEqual(TOKEN, TOKEN)).toBe(true);
    expect(tokensEqual(TOKEN, TOKEN + "x")).toBe(false);
    expect(tokensEqual("", TOKEN)).toBe(false);
    expect(tokenFingerprint(TOKEN)).toBe(`token:${new Bun.CryptoHasher("sha256").update(TOKEN).digest("hex").slice(0, 6)}`);
    expect(tokenFingerprint(TOKEN)).not.toContain(TOKEN.slice(0, 6));
    expect(checkBearer(`Bearer ${TOKEN}`, TOKEN).ok).toBe(true);
    expect(checkBearer("Bearer nope", TOKEN)).toMatchObject({ ok: false, error: { code: "INVALID_API_KEY" } });
    expect(checkBearer(undefined, TOKEN)).toMatchObject({ ok: false, error: { code: "MISSING_API_KEY" } });
  });

  test("bind policy: loopback free, anything else needs a token of ≥ 16 chars", () => {
    expect(bindPolicyViolation("127.0.0.1", undefined)).toBeNull();
    expect(bindPolicyViolation("::1", undefined)).toBeNull();
    expect(bindPolicyViolation("localhost", undefined)).toBeNull();
    expect(bindPolicyViolation("0.0.0.0", undefined)).toBe(
      "refusing to bind 0.0.0.0: a non-loopback address needs LLORCH_API_TOKEN (at least 16 characters); bind 127.0.0.1 or set a token",
    );
    expect(bindPolicyViolation("0.0.0.0", "short")).toBe(
      "refusing to bind 0.0.0.0: LLORCH_API_TOKEN is 5 characters, at least 16 are required for a non-loopback bind",
    );
    expect(bindPolicyViolation("0.0.0.0", "x".repeat(16))).toBeNull();
    expect(bindPolicyViolation("10.1.2.3", TOKEN)).toBeNull();
  });
});

describe("auth over HTTP", () => {
  let server: HiveServer;
  const logger = memoryLogger();
  beforeAll(() => {
    const app = createApp({ config: defaultConfig("/tmp"), logger, apiToken: TOKEN });
    server = serve((r) => app.fetch(r), { host: "127.0.0.1", port: 0, bodyLimitBytes: 1 << 20, logger });
  });
  afterAll(() => server.stop(true));

  const get = (path: string, headers: Record<string, string> = {}) => fetch(server.url + path, { headers });

  test("public routes need no token", async () => {
    expect((await get("/v1/health")).status).toBe(200);
    expect((await get("/openapi/json")).status).toBe(200);
  });
});

describe("auth on a protected route", () => {
  let server: HiveServer;
  const logger = memoryLogger();
  beforeAll(async () => {
    const { Elysia } = await import("elysia");
    const protectedRoute = new Elysia().get("/v1/protected", () => ({ ok: true }));
    const app = createApp({ config: defaultConfig("/tmp"), logger, apiToken: TOKEN, controllers: [protectedRoute] });
    server = serve((r) => app.fetch(r), { host: "127.0.0.1", port: 0, bodyLimitBytes: 1 << 20, logger });
  });
  afterAll(() => server.stop(true));

  const call = (headers: Record<string, string> = {}) => fetch(server.url + "/v1/protected", { headers });

  test("missing, malformed, lower-case prefix, empty, over-long → MISSING_API_KEY", async () => {
    for (const headers of <Record<string, string>[]>[
      {},
      { authorization: TOKEN },
      { authorization: `bearer ${TOKEN}` },
      { authorization: "Bearer " },
      { authorization: "Bearer " + "x".repeat(5000) },
    ]) {
      const res = await call(headers);
      expect(res.status).toBe(401);
      expect((await res.json() as any)).toEqual({ error: { code: "MISSING_API_KEY", message: "Missing API key" } });
    }
  });

  test("wrong token → INVALID_API_KEY, logged only by fingerprint", async () => {
    const res = await call({ authorization: "Bearer wrong-token-value" });
    expect(res.status).toBe(401);
    expect((await res.json() as any)).toEqual({ error: { code: "INVALID_API_KEY", message: "Invalid or missing API key" } });
    const all = logger.lines.join("\n");
    expect(all).toContain(tokenFingerprint("wrong-token-value"));
    expect(all).not.toContain("wrong-token-value");
    expect(all).not.toContain(TOKEN);
  });

  test("right token → 200", async () => {
    const res = await call({ authorization: `Bearer ${TOKEN}` });
    expect(res.status).toBe(200);
    expect((await res.json() as any)).toEqual({ ok: true });
  });
});

describe("bind policy at startup", () => {
  const procs: Subprocess[] = [];
  const dirs: Array<() => void> = [];
  // A daemon that wrongly started on 0.0.0.0 must not outlive its test.
  afterEach(() => {
    for (const p of procs.splice(0)) p.kill("SIGKILL");
    for (const c of dirs.splice(0)) c();
  });

  function daemon(addr: string, token: string) {
    const d = tempDir();
    dirs.push(d.cleanup);
    const proc = Bun.spawn([process.execPath, MAIN, "daemon", "--addr", addr, "--log-format", "json"], {
      env: { ...process.env, RBEE_DATA_DIR: d.path, LLORCH_API_TOKEN: token },
      stdout: "pipe",
      stderr: "pipe",
    });
    procs.push(proc);
    return proc;
  }

  test("0.0.0.0 without a token refuses to start with a clear message", async () => {
    const proc = daemon("0.0.0.0:0", "");
    expect(await exitWithin(proc, 10_000, "daemon on 0.0.0.0 without a token")).toBe(2); // a configuration error (README "Exit codes")
    expect(await new Response(proc.stderr).text()).toBe(
      "rbee-hive: refusing to bind 0.0.0.0: a non-loopback address needs LLORCH_API_TOKEN (at least 16 characters); bind 127.0.0.1 or set a token\n",
    );
  });

  test("0.0.0.0 with a token one character short refuses too", async () => {
    const proc = daemon("0.0.0.0:0", "x".repeat(15));
    expect(await exitWithin(proc, 10_000, "daemon on 0.0.0.0 with a short token")).toBe(2);
    expect(await new Response(proc.stderr).text()).toBe(
      "rbee-hive: refusing to bind 0.0.0.0: LLORCH_API_TOKEN is 15 characters, at least 16 are required for a non-loopback bind\n",
    );
  });

  test("0.0.0.0 with a token of 16 characters starts, and asks for it", async () => {
    const token = "0123456789abcdef";
    const port = freePort();
    const proc = daemon(`0.0.0.0:${port}`, token);
    const base = `http://127.0.0.1:${port}`;
    await waitFor(() => fetch(`${base}/v1/health`).then((r) => r.ok, () => false), { what: "daemon on 0.0.0.0", timeoutMs: 10_000 });
    expect((await fetch(`${base}/v1/workers/list`)).status).toBe(401);
    const authed = await fetch(`${base}/v1/workers/list`, { headers: { authorization: `Bearer ${token}` } });
    expect(await authed.json()).toEqual({ workers: [] });
    proc.kill("SIGTERM");
    expect(await exitWithin(proc, 10_000, "daemon after SIGTERM")).toBe(0);
    const log = await new Response(proc.stderr).text();
    const listening = log.split("\n").filter(Boolean).map((l) => JSON.parse(l)).find((l) => l.msg === "rbee-hive listening");
    expect(listening).toMatchObject({ url: `http://0.0.0.0:${port}`, auth: tokenFingerprint(token), loopback: false });
    expect(log).not.toContain(token);
  });
});
