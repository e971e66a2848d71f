import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  bindPolicyViolation,
  checkBearer,
  parseBearer,
  tokenFingerprint,
  tokensEqual,
} from "../src/shared/auth-min.ts";
import { createApp } from "../src/app.ts";
import { serve, type HiveServer } from "../src/server.ts";
import { defaultConfig, memoryLogger, MAIN, tempDir } from "./helpers.ts";

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
    expect(tokenFingerprint(TOKEN)).toMatch(/^token:[0-9a-f]{6}$/);
    expect(tokenFingerprint(TOKEN)).not.toContain(TOKEN.slice(0, 6));
    expect(checkBearer(`Bearer ${TOKEN}`, TOKEN).ok).toBe(true);
    expect(checkBearer("Bearer nope", TOKEN)).toMatchObject({ ok: false, error: { code: "INVALID_API_KEY" } });
    expect(checkBearer(undefined, TOKEN)).toMatchObject({ ok: false, error: { code: "MISSING_API_KEY" } });
  });

  test("bind policy: loopback free, anything else needs a token of ≥ 16 chars", () => {
    expect(bindPolicyViolation("127.0.0.1", undefined)).toBeNull();
    expect(bindPolicyViolation("::1", undefined)).toBeNull();
    expect(bindPolicyViolation("localhost", undefined)).toBeNull();
    expect(bindPolicyViolation("0.0.0.0", undefined)).toMatch(/LLORCH_API_TOKEN/);
    expect(bindPolicyViolation("0.0.0.0", "short")).toMatch(/at least 16/);
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
  test("0.0.0.0 without a token refuses to start with a clear message", async () => {
    const d = tempDir();
    try {
      const proc = Bun.spawn([process.execPath, MAIN, "daemon", "--addr", "0.0.0.0:0"], {
        env: { ...process.env, RBEE_DATA_DIR: d.path, LLORCH_API_TOKEN: "" },
        stdout: "pipe",
        stderr: "pipe",
      });
      expect(await proc.exited).toBe(1);
      expect(await new Response(proc.stderr).text()).toContain("needs LLORCH_API_TOKEN");
    } finally {
      d.cleanup();
    }
  });

  test("0.0.0.0 with a short token refuses too", async () => {
    const d = tempDir();
    try {
      const proc = Bun.spawn([process.execPath, MAIN, "--addr", "0.0.0.0:0"], {
        env: { ...process.env, RBEE_DATA_DIR: d.path, LLORCH_API_TOKEN: "short" },
        stdout: "pipe",
        stderr: "pipe",
      });
      expect(await proc.exited).toBe(1);
      expect(await new Response(proc.stderr).text()).toContain("at least 16");
    } finally {
      d.cleanup();
    }
  });
});
