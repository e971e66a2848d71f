/** Every number and string a caller sends is bounded, and a refusal names the field that is wrong. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { startTestHive, type TestHive } from "./helpers.ts";

let h: TestHive;
beforeAll(async () => {
  h = await startTestHive();
});
afterAll(() => h.close());

async function error(res: Response): Promise<{ status: number; code: string; message: string }> {
  const body = (await res.json()) as { error: { code: string; message: string } };
  return { status: res.status, code: body.error.code, message: body.error.message };
}

const spawn = (body: Record<string, unknown>) =>
  h.api("/v1/workers/spawn", { json: { model_ref: h.modelRef, backend: "cpu", device: 0, ...body } });

describe("spawn", () => {
  test("a device index beyond 255 is refused before anything starts", async () => {
    for (const device of [4294967296, 1e20, 256]) {
      expect(await error(await spawn({ device }))).toEqual({
        status: 400,
        code: "INVALID_INPUT",
        message: "device: Expected integer to be less or equal to 255",
      });
    }
    expect(await error(await spawn({ device: -1 }))).toEqual({
      status: 400,
      code: "INVALID_INPUT",
      message: "device: Expected integer to be greater or equal to 0",
    });
    expect(h.registry.list()).toEqual([]);
  });

  test("strings are bounded", async () => {
    expect(await error(await spawn({ backend: "c".repeat(65) }))).toEqual({
      status: 400,
      code: "INVALID_INPUT",
      message: "backend: Expected string length less or equal to 64",
    });
    expect(await error(await spawn({ model_ref: `file:/${"m".repeat(600)}` }))).toEqual({
      status: 400,
      code: "INVALID_INPUT",
      message: "model_ref: Expected string length less or equal to 512",
    });
    expect(await error(await spawn({ model_path: "p".repeat(5000) }))).toEqual({
      status: 400,
      code: "INVALID_INPUT",
      message: "model_path: Expected string length less or equal to 4096",
    });
  });

  test("a missing field says it is required", async () => {
    const res = await h.api("/v1/workers/spawn", { json: { model_ref: h.modelRef, backend: "cpu" } });
    expect(await error(res)).toEqual({ status: 400, code: "INVALID_INPUT", message: "device: is required" });
  });
});

describe("heartbeat of a known worker", () => {
  test("a timestamp that is not RFC 3339 and a 100 KB health_status are refused", async () => {
    const { worker_id } = await h.spawn();
    await h.waitState(worker_id, (w) => w.state === "idle", "idle");
    const beat = (body: Record<string, unknown>) => h.api("/v1/heartbeat", { json: { worker_id, ...body } });
    expect(await error(await beat({ timestamp: "garbage", health_status: "healthy" }))).toEqual({
      status: 400,
      code: "INVALID_INPUT",
      message: "timestamp: Expected string to match 'RFC 3339 date-time, e.g. 2026-11-30T12:00:00Z'",
    });
    expect(await error(await beat({ timestamp: "2026-11-30T12:00:00Z", health_status: "h".repeat(100_000) }))).toEqual({
      status: 400,
      code: "INVALID_INPUT",
      message: "health_status: Expected string length less or equal to 32",
    });
    const ok = await beat({ timestamp: "2026-11-30T12:00:00.123+01:00", health_status: "degraded" });
    expect(ok.status).toBe(200);
  });
});

describe("query parameters are named as such", () => {
  test("?tail=-5 is a query error, not a body error", async () => {
    const { worker_id } = await h.spawn();
    expect(await error(await h.api(`/v1/workers/${worker_id}/logs?tail=-5`))).toEqual({
      status: 400,
      code: "INVALID_INPUT",
      message: "query parameter tail: must be an integer from 1 to 10000",
    });
    expect(await error(await h.api(`/v1/workers/${worker_id}/logs?tail=abc`))).toEqual({
      status: 400,
      code: "INVALID_INPUT",
      message: "query parameter tail: must be an integer from 1 to 10000",
    });
  });

  test("a path parameter longer than any worker id is refused", async () => {
    expect(await error(await h.api(`/v1/workers/${"w".repeat(200)}`))).toEqual({
      status: 400,
      code: "INVALID_INPUT",
      message: "path parameter id: Expected string length less or equal to 128",
    });
  });
});
