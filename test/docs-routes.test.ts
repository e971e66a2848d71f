/** The routes the daemon advertises exist: the offline docs page, and every route a message names. */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { REMOVED_SUBCOMMANDS, USAGE } from "../src/cli.ts";
import { startTestHive, type TestHive } from "./helpers.ts";

let h: TestHive;
let spec: { paths: Record<string, Record<string, unknown>> };
beforeAll(async () => {
  h = await startTestHive({ token: "docs-token-0123456789abcdef" });
  spec = (await (await fetch(`${h.url}/openapi/json`)).json()) as typeof spec;
});
afterAll(() => h.close());

/** `GET /v1/workers/list` → ["GET", "/v1/workers/list"], with `{id}` kept as the spec writes it. */
function routesIn(text: string): Array<[method: string, path: string]> {
  return [...text.matchAll(/\b(GET|POST|PUT|PATCH|DELETE) (\/[A-Za-z0-9/{}_.-]*[A-Za-z0-9}_-])/g)].map((m) => [m[1]!, m[2]!]);
}

describe("advertised routes exist", () => {
  test("GET /openapi is a page that works offline and needs no token", async () => {
    const res = await fetch(`${h.url}/openapi`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/html; charset=utf-8");
    const html = await res.text();
    expect(html).toContain('<span class="m">POST</span> <code>/v1/workers/spawn</code>');
    // Nothing loaded from elsewhere: no script, no external stylesheet or image.
    expect(html).not.toMatch(/<script|<link|src=|https?:\/\//);
  });

  test("every route named by --help and by the removed subcommands' messages is served", () => {
    const named = [USAGE, ...Object.values(REMOVED_SUBCOMMANDS)].flatMap(routesIn);
    expect(named.length).toBeGreaterThan(5);
    // The spec's own route is not listed in the spec.
    const served = (method: string, path: string) => !!spec.paths[path]?.[method.toLowerCase()] || `${method} ${path}` === "GET /openapi/json";
    expect(named.filter(([method, path]) => !served(method, path))).toEqual([]);
  });
});
