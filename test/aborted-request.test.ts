/**
 * A request whose body never arrives in full (the client declared more than it sent and closed
 * its side) is the client's failure: the hive answers it as a 4xx in the error shape and logs no
 * "request crashed" (found by test/fuzz: Elysia hands the body read's AbortError over with the
 * DOMException code 20 as its "status", which no Response can carry).
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { connect } from "node:net";
import { startTestHive, waitFor, type TestHive } from "./helpers.ts";

const TOKEN = "abort-token-0123456789abcdef";
let h: TestHive;
beforeAll(async () => {
  h = await startTestHive({ token: TOKEN });
});
afterAll(() => h.close());

/** Send `head` and `body` on a raw socket, half-close, and read whatever comes back. */
function halfClosed(head: string, body: string): Promise<string> {
  return new Promise((resolve) => {
    const sock = connect({ host: "127.0.0.1", port: Number(new URL(h.url).port) });
    let out = "";
    const timer = setTimeout(() => sock.destroy(), 5000); // hang guard
    sock.on("connect", () => sock.end(head + body));
    sock.on("data", (d: Buffer) => (out += d.toString("latin1")));
    sock.on("error", () => {});
    sock.on("close", () => {
      clearTimeout(timer);
      resolve(out);
    });
  });
}

for (const [what, head, body] of [
  ["declared length", "POST /v1/workers/spawn HTTP/1.1\r\nContent-Length: 500\r\n", '{"model_ref":"file:/x","backend":"cpu",'],
  ["chunked", "POST /v1/workers/spawn HTTP/1.1\r\nTransfer-Encoding: chunked\r\n", '40\r\n{"model_ref":"file:/x",'],
  ["chunked, no route", "PATCH /v1/health HTTP/1.1\r\nTransfer-Encoding: chunked\r\n", "10\r\n{"],
] as const) {
  test(`a body cut short by the client is not a crash (${what})`, async () => {
    const before = h.logs.length;
    const answer = await halfClosed(`${head}Host: 127.0.0.1\r\nAuthorization: Bearer ${TOKEN}\r\nContent-Type: application/json\r\n\r\n`, body);
    // Answered or not (the client is gone), the hive logs the request once it is done with it.
    await waitFor(() => h.logs.slice(before).some((l) => l.includes('"msg":"request"')), { what: "the request log line" });
    const lines = h.logs.slice(before).map((l) => JSON.parse(l));
    expect(lines.filter((l) => l.level === "error")).toEqual([]);
    const request = lines.find((l) => l.msg === "request");
    expect(request.status).toBeGreaterThanOrEqual(400);
    expect(request.status).toBeLessThan(500);
    if (answer) expect(answer).toMatch(/^HTTP\/1\.1 4\d\d /);
  });
}
