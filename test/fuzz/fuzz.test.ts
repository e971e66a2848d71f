/**
 * Fuzzing every route (fast-check): random and adversarial bodies, query strings, path parameters
 * and headers against a live hive with a token. The routes come from the hive's own
 * `/openapi/json`, so a new route is fuzzed without touching this file.
 *
 * For every request: no 5xx (a 504 DEADLINE_EXCEEDED only for a request that sent X-Deadline: a
 * past deadline is the caller's), an answer within the hang guard, every 4xx body exactly
 * `{"error":{"code","message"[,"details"]}}`, every request without a valid token on a protected
 * route exactly the upstream 401 (worker callbacks: 401, or 404 WORKER_NOT_FOUND for a well-formed
 * one naming an unknown worker), no injected header in an answer. After the run: no worker process
 * spawned (no `spawned` event, no new child process), no file created, changed or removed outside
 * the data dir (the temp parent is snapshotted; shell-metacharacter strings name a canary file),
 * no request crashed (no `request crashed` / `unhandled error` log line), and the hive still answers
 * `GET /v1/health` within 100 ms.
 *
 * CI runs a fixed seed and a bounded count (FUZZ_SEED, FUZZ_REQUESTS: default 10,000 requests
 * over fetch plus FUZZ_RAW_REQUESTS, default 1,000, over raw sockets for what fetch refuses to
 * send: CR/LF and NUL in headers, un-normalized paths, broken request lines). A long run on
 * demand: `bun run fuzz` (FUZZ_REQUESTS=200000, a new seed each time, printed).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import fc from "fast-check";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "node:net";
import { startTestHive, type TestHive } from "../helpers.ts";
import { FakeHub } from "../fixtures/fake-hub.ts";

/** A fixed seed in CI; FUZZ_SEED=random (bun run fuzz) draws one, printed so a failure replays. */
const SEED = process.env.FUZZ_SEED === "random" ? Math.floor(Math.random() * 2 ** 31) : Number(process.env.FUZZ_SEED ?? 20261130);
const REQUESTS = Number(process.env.FUZZ_REQUESTS ?? 10_000);
const RAW_REQUESTS = Number(process.env.FUZZ_RAW_REQUESTS ?? 1_000);
const BATCH = 16;
const HANG_GUARD_MS = 10_000;
const TOKEN = "fuzz-token-0123456789abcdef";
const BODY_LIMIT = 4096;

const MISSING = { error: { code: "MISSING_API_KEY", message: "Missing API key" } };
const INVALID = { error: { code: "INVALID_API_KEY", message: "Invalid or missing API key" } };
const PUBLIC = new Set(["/v1/health", "/metrics", "/openapi", "/openapi/json", "/", "/ui/app.js", "/ui/app.css"]);
const CALLBACKS = new Set(["/v1/workers/ready", "/v1/heartbeat", "/v1/workers/ready/v1/heartbeat"]);

interface Route {
  method: string;
  /** OpenAPI path, e.g. /v1/workers/{id}/proxy/* */
  path: string;
  query: string[];
  bodyFields: string[];
  hasBody: boolean;
}

let parent: string;
let canary: string;
let hive: TestHive;
let hub: FakeHub;
let routes: Route[] = [];
let spawned = 0;
let childrenBefore: Set<number>;
let snapshotBefore: Map<string, string>;
const violations: string[] = [];
let sent = 0;

/** Every file and directory under `dir` (except `skip`) with its size and mtime. */
function snapshot(dir: string, skip: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (p === skip) continue;
      const st = statSync(p);
      out.set(p, `${st.isDirectory() ? "dir" : st.size}:${st.mtimeMs}`);
      if (st.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out;
}

/** Child processes of this process (the test hive runs in it), from /proc. */
function children(): Set<number> {
  const out = new Set<number>();
  for (const e of readdirSync("/proc")) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, "utf8");
      const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      if (Number(rest[1]) === process.pid && rest[0] !== "Z") out.add(Number(e));
    } catch {
      // gone
    }
  }
  return out;
}

beforeAll(async () => {
  // The hive's data dir lives in a parent of our own, so "nothing outside the data dir" is checkable.
  parent = mkdtempSync(join(tmpdir(), "rbee-fuzz-"));
  canary = join(parent, "canary");
  mkdirSync(join(parent, "outside"));
  writeFileSync(join(parent, "outside", "keep.txt"), "untouched\n");
  hub = await FakeHub.start();
  const savedTmp = process.env.TMPDIR;
  process.env.TMPDIR = parent;
  try {
    hive = await startTestHive({
      token: TOKEN,
      config: { server: { body_limit_bytes: BODY_LIMIT }, downloads: { hf_endpoint: hub.url, max_retries: 0 } },
    });
  } finally {
    if (savedTmp === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = savedTmp;
  }
  hive.bus.subscribe((e) => {
    if (e.type === "spawned") spawned++;
  });
  const spec = (await (await hive.api("/openapi/json")).json()) as {
    paths: Record<string, Record<string, { parameters?: Array<{ in: string; name: string }>; requestBody?: { content?: Record<string, { schema?: any }> } }>>;
  };
  const schemas = (spec as any).components?.schemas ?? {};
  const fieldsOf = (schema: any): string[] => {
    if (!schema) return [];
    if (schema.$ref) return fieldsOf(schemas[String(schema.$ref).split("/").pop()!]);
    return Object.keys(schema.properties ?? {});
  };
  for (const [path, methods] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const json = op.requestBody?.content?.["application/json"];
      routes.push({
        method: method.toUpperCase(),
        path,
        query: (op.parameters ?? []).filter((p) => p.in === "query").map((p) => p.name),
        bodyFields: fieldsOf(json?.schema),
        hasBody: !!op.requestBody,
      });
    }
  }
  // The status page's files and the spec itself are served but not listed in the spec.
  for (const path of ["/", "/ui/app.js", "/ui/app.css", "/openapi/json"]) routes.push({ method: "GET", path, query: [], bodyFields: [], hasBody: false });
  childrenBefore = children();
  snapshotBefore = snapshot(parent, hive.dataDir);
}, 30_000);

afterAll(async () => {
  await hive?.close();
  await hub?.stop();
  rmSync(parent, { recursive: true, force: true });
});

// ------------------------------------------------------------------ generators

/** Strings that have broken servers: traversal, shell, injection, encodings, sizes. */
const nasty = () =>
  fc.constantFrom(
    "../../../../etc/passwd",
    "..%2f..%2f..%2fetc%2fpasswd",
    "/etc/passwd",
    "/etc/shadow",
    `file:${canary}`,
    `file:${join(parent, "outside", "keep.txt")}`,
    `file:${join(parent, "outside")}`,
    "file:///etc/passwd",
    "file:/../../etc",
    "file:.",
    "hf:../../etc/passwd",
    "hf:org/repo/../../../../etc/passwd",
    "hf:org/repo:Q4_K_M/../../x",
    "hf:org/repo",
    "hf:a/b:Q8_0",
    "hf:org/repo/model.gguf",
    `$(touch ${canary})`,
    `\`touch ${canary}\``,
    `; touch ${canary}`,
    `| touch ${canary}`,
    `&& touch ${canary} &&`,
    `'; touch ${canary}; '`,
    "\u0000",
    "a\u0000b",
    "\r\nX-Injected: 1",
    "%0d%0aX-Injected:%201",
    "%00",
    "\u202e\u0645",
    "😀👍🏽",
    "\uffff",
    "\ud800",
    "A".repeat(5000),
    "{worker_id}",
    "{model_path} {port}",
    "${HOME}",
    "%s%n%x",
    "null",
    "__proto__",
    "constructor",
    "-1",
    "1e309",
    "0x10",
    " ",
    "",
    "cpu",
    "cuda",
    "llm-worker-rbee",
    "worker-00000000-0000-4000-8000-000000000000",
  );

const str = () =>
  fc.oneof(
    { weight: 4, arbitrary: nasty() },
    { weight: 2, arbitrary: fc.string({ maxLength: 40 }) },
    { weight: 2, arbitrary: fc.string({ unit: "binary", maxLength: 40 }) },
    { weight: 1, arbitrary: fc.tuple(fc.constantFrom("hf:", "file:", "file:/", "hf:org/"), nasty()).map(([a, b]) => a + b) },
  );

const num = () =>
  fc.oneof(
    fc.integer(),
    fc.constantFrom(0, -1, 1, 255, 256, 2 ** 31, 2 ** 53 + 1, -(2 ** 63), 1e308, -0, 0.5, 1048577, 604801),
    fc.double({ noNaN: true, noDefaultInfinity: true }),
  );

/** Any JSON value, strings and numbers from the generators above (built once the parent dir exists). */
const valueArb = (): fc.Arbitrary<unknown> => fc.letrec<{ v: unknown }>((tie) => ({
  v: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    str(),
    num(),
    fc.boolean(),
    fc.constant(null),
    fc.array(tie("v"), { maxLength: 4 }),
    fc.dictionary(str(), tie("v"), { maxKeys: 4 }),
  ),
})).v;

interface Req {
  route: number;
  params: string[];
  rawParam: boolean;
  tail: string;
  query: Array<[string, string]>;
  headers: Array<[string, string]>;
  auth: "valid" | "none" | "wrong" | "lowercase" | "basic" | "huge";
  body:
    | { kind: "none" }
    | { kind: "json"; fields: Array<[string, unknown]> }
    | { kind: "value"; value: unknown }
    | { kind: "text"; text: string; type: string }
    | { kind: "big" }
    | { kind: "deep"; depth: number };
}

/** Header values fetch can carry (latin-1, no CR/LF/NUL): the raw-socket test sends the rest. */
const headerValue = () =>
  fc.oneof(
    nasty().map((s) => s.replace(/[^\x20-\x7e]/g, "")),
    fc.string({ maxLength: 60 }).map((s) => s.replace(/[^\x20-\x7e]/g, "")),
    fc.constantFrom("0", "-1", "1", "99999999999999999999", `${Date.now() - 1000}`, `${Date.now() + 60_000}`, "abc", "application/json", "text/plain", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded", "bytes=0-1", "*/*", "text/event-stream"),
  );

const headerName = () =>
  fc.constantFrom("x-correlation-id", "x-deadline", "content-type", "accept", "last-event-id", "range", "cookie", "x-forwarded-for", "x-forwarded-host", "origin", "if-none-match", "user-agent", "x-requested-with", "accept-encoding", "expect");

const reqArb = (): fc.Arbitrary<Req> =>
  fc.record({
    route: fc.nat({ max: routes.length - 1 }),
    params: fc.array(str(), { minLength: 1, maxLength: 1 }),
    rawParam: fc.boolean(),
    tail: fc.oneof(fc.constant("v1/chat/completions"), str()),
    query: fc.array(fc.tuple(fc.oneof(fc.constantFrom("drain", "tail", "id", "purge", "model_ref", "model", "device", "context", "revision", "last_event_id"), str()), fc.oneof(str(), num().map(String))), { maxLength: 4 }),
    headers: fc.array(fc.tuple(headerName(), headerValue()), { maxLength: 3 }),
    auth: fc.constantFrom("valid", "valid", "valid", "valid", "valid", "none", "wrong", "lowercase", "basic", "huge"),
    body: fc.oneof(
      { weight: 1, arbitrary: fc.constant({ kind: "none" as const }) },
      { weight: 5, arbitrary: fc.array(fc.tuple(fc.oneof(fc.constantFrom("model_ref", "backend", "device", "worker_id", "revision", "profile", "context", "keep_alive_s", "force", "in_flight", "drain", "timestamp", "health_status", "url", "model_path"), str()), valueArb()), { maxLength: 6 }).map((fields) => ({ kind: "json" as const, fields })) },
      { weight: 1, arbitrary: valueArb().map((v) => ({ kind: "value" as const, value: v })) },
      { weight: 2, arbitrary: fc.record({ kind: fc.constant("text" as const), text: fc.oneof(fc.constantFrom("{", '{"model_ref":', "[1,2", "nul\u0000l", '{"a":1}garbage', "\ufeff{}", "", "null", "true", "1e99999"), fc.string({ unit: "binary", maxLength: 80 })), type: fc.constantFrom("application/json", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=zz", "application/octet-stream", "") }) },
      { weight: 1, arbitrary: fc.constant({ kind: "big" as const }) },
      { weight: 1, arbitrary: fc.integer({ min: 100, max: 5000 }).map((depth) => ({ kind: "deep" as const, depth })) },
    ),
  });

/** encodeURIComponent of any string (a lone surrogate travels as U+FFFD, as a browser sends it). */
const pct = (s: string) => encodeURIComponent(s.toWellFormed());

/**
 * The route's path with its parameters filled in (encoded, or raw to hit the router's edges) and
 * a query string: the route's own parameter names and random ones, with adversarial values.
 */
function urlPath(route: Route, r: Req): string {
  const enc = (s: string) => (r.rawParam ? s.toWellFormed().replace(/[?#\s%]/gu, encodeURIComponent) : pct(s));
  let path = route.path.replace(/\{[^}]+\}/g, () => enc(r.params[0]!));
  if (path.endsWith("/*")) path = path.slice(0, -1) + r.tail.toWellFormed().replace(/[?#\s%]/gu, encodeURIComponent);
  const own = route.query.length ? [[route.query[r.query.length % route.query.length]!, r.params[0]!] as [string, string]] : [];
  const qs = [...own, ...r.query].map(([k, v]) => `${pct(k)}=${pct(v)}`).join("&");
  return qs ? `${path}?${qs}` : path;
}

function requestBody(route: Route, r: Req): { body?: string; type?: string } {
  const b = r.body;
  switch (b.kind) {
    case "none":
      return {};
    case "json": {
      const o: Record<string, unknown> = {};
      for (const [k, v] of b.fields) o[k] = v;
      // Keep the route's own field names in play: a random subset of them with random values.
      for (const f of route.bodyFields) if (!(f in o) && b.fields.length % 2 === 0) o[f] = b.fields[0]?.[1] ?? "x";
      return { body: JSON.stringify(o), type: "application/json" };
    }
    case "value":
      return { body: JSON.stringify(b.value) ?? "null", type: "application/json" };
    case "text":
      return { body: b.text, type: b.type || undefined };
    case "big":
      return { body: JSON.stringify({ model_ref: "x".repeat(BODY_LIMIT * 2) }), type: "application/json" };
    case "deep":
      return { body: "[".repeat(b.depth) + "]".repeat(b.depth), type: "application/json" };
  }
}

function authHeader(a: Req["auth"]): string | undefined {
  switch (a) {
    case "valid":
      return `Bearer ${TOKEN}`;
    case "none":
      return undefined;
    case "wrong":
      return "Bearer not-the-token-0123456789";
    case "lowercase":
      return `bearer ${TOKEN}`;
    case "basic":
      return `Basic ${btoa(`user:${TOKEN}`)}`;
    case "huge":
      return `Bearer ${"t".repeat(8000)}`;
  }
}

/** What is wrong with one answer (empty: nothing). */
function judge(route: Route, sentPath: string, r: Req, status: number, text: string, headers: Headers, deadlineSent: boolean): string[] {
  const bad: string[] = [];
  // Bun's HTTP parser refuses a request head over its limit (a 10 KB query and an 8 KB header)
  // with a bodiless 431 before any of the hive's code runs; a bare Bun.serve answers the same.
  if (status === 431 && text === "") {
    parserRefusals++;
    return bad;
  }
  const authorized = r.auth === "valid" && route.path !== "/v1/shutdown";
  // The path as it reached the hive (fetch resolves dot segments of a raw parameter).
  const isPublic = PUBLIC.has(sentPath);
  if (status >= 500 && !(status === 504 && deadlineSent)) bad.push(`status ${status}: ${text.slice(0, 300)}`);
  if ([...headers.keys()].some((k) => k.toLowerCase().startsWith("x-injected"))) bad.push("an injected header came back");
  if (!authorized && !isPublic) {
    const body = safeJson(text);
    const callback = CALLBACKS.has(sentPath) && route.method === "POST";
    // A HEAD answer has no body: its status is all there is to check.
    const ok401 = status === 401 && (route.method === "HEAD" || Bun.deepEquals(body, MISSING) || Bun.deepEquals(body, INVALID));
    const ok404 = callback && status === 404 && (body as any)?.error?.code === "WORKER_NOT_FOUND";
    // A path that names no route (a raw parameter with '/') is behind auth all the same.
    if (!ok401 && !ok404) bad.push(`unauthenticated (${r.auth}) got ${status} ${text.slice(0, 200)}`);
  }
  if (status >= 400 && route.method !== "HEAD") {
    const body = safeJson(text) as any;
    const keys = body && typeof body === "object" ? Object.keys(body) : [];
    const e = body?.error;
    const shapeOk =
      keys.length === 1 &&
      keys[0] === "error" &&
      e &&
      typeof e === "object" &&
      typeof e.code === "string" &&
      e.code.length > 0 &&
      typeof e.message === "string" &&
      Object.keys(e).every((k) => k === "code" || k === "message" || (k === "details" && e.details && typeof e.details === "object"));
    if (!shapeOk) bad.push(`error body not in the error shape: ${status} ${text.slice(0, 200)}`);
  }
  return bad;
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

async function send(r: Req): Promise<void> {
  try {
    await sendOne(r);
  } catch (e) {
    violations.push(`the fuzzer itself failed on ${JSON.stringify(r).slice(0, 300)}: ${e instanceof Error ? e.stack : String(e)}`);
  }
}

async function sendOne(r: Req): Promise<void> {
  const route = routes[r.route]!;
  const path = urlPath(route, r);
  const headers = new Headers();
  let deadlineSent = false;
  for (const [k, v] of r.headers) {
    try {
      headers.set(k, v);
      if (k === "x-deadline") deadlineSent = true;
    } catch {
      // a value fetch itself refuses: the raw-socket test covers those
    }
  }
  // A valid POST /v1/shutdown ends the hive under test: it is fuzzed without the token only.
  const auth = authHeader(route.path === "/v1/shutdown" && r.auth === "valid" ? "none" : r.auth);
  if (auth) headers.set("authorization", auth);
  const { body, type } = route.method === "GET" || route.method === "HEAD" ? {} : requestBody(route, r);
  if (type) headers.set("content-type", type);
  const ctl = new AbortController();
  const guard = setTimeout(() => ctl.abort(), HANG_GUARD_MS);
  let res: Response;
  try {
    res = await fetch(hive.url + path, { method: route.method, headers, body, signal: ctl.signal, redirect: "manual" });
  } catch (e) {
    clearTimeout(guard);
    if (ctl.signal.aborted) violations.push(`${route.method} ${path}: no answer within ${HANG_GUARD_MS} ms`);
    else if (!(e instanceof TypeError)) violations.push(`${route.method} ${path}: ${String(e)}`);
    return; // TypeError: fetch refused to send it (an invalid URL or header); nothing reached the hive
  }
  sent++;
  let text = "";
  try {
    if ((res.headers.get("content-type") ?? "").startsWith("text/event-stream")) await res.body?.cancel();
    else text = await res.text();
  } catch {
    // a stream cut by the guard
  } finally {
    clearTimeout(guard);
  }
  const sentPath = new URL(hive.url + path).pathname;
  for (const b of judge(route, sentPath, r, res.status, text, res.headers, deadlineSent)) violations.push(`${route.method} ${path} [auth ${r.auth}, body ${r.body.kind}]: ${b}`);
}

// ------------------------------------------------------------------ raw sockets

/**
 * What Bun's own HTTP parser answers to a request line that is not `METHOD SP TARGET SP HTTP/1.x`
 * (a space in the target, no version, a NUL in the method), before any of the hive's code runs; a
 * bare `Bun.serve` answers the same. Counted and printed, not a violation of the hive's.
 */
const BUN_PARSER_505 = "HTTP/1.1 505 HTTP Version Not Supported\r\nConnection: close";
let parserRefusals = 0;

interface RawReq {
  method: string;
  target: string;
  headers: string[];
  auth: boolean;
  body: string;
}

const rawArb = (): fc.Arbitrary<RawReq> =>
  fc.record({
    method: fc.oneof(
      { weight: 9, arbitrary: fc.constantFrom("GET", "POST", "DELETE", "PUT", "HEAD", "OPTIONS", "PATCH", "BOGUS", "TRACE") },
      { weight: 1, arbitrary: fc.constantFrom("GET /x", "", "G\u0000T", "CONNECT") },
    ),
    target: fc.oneof(
      fc.constantFrom(
        "/v1/health",
        "/v1/workers/list",
        "/v1/../v1/workers/list",
        "/v1/health/../workers/list",
        "//v1/workers/list",
        "/v1/./workers/list",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/v1/workers/..%2f..%2fetc%2fpasswd",
        "/v1/workers/x/proxy/../../../../etc/passwd",
        "/v1/workers/x/logs?tail=1%00",
        "http://evil.example/v1/workers/list",
        "*",
        "/v1/models?model_ref=file:/etc/passwd",
        `/v1/models/download/${"a".repeat(9000)}`,
        "/\u0000",
        "/v1/health\r\nX-Injected: 1",
        "/openapi/json",
        "/",
      ),
      // Bytes outside visible ASCII are percent-encoded so the request line stays one line.
      str().map((s) => "/v1/workers/" + s.toWellFormed().replace(/[^\x21-\x7e]|%/gu, (c) => encodeURIComponent(c))),
    ),
    headers: fc.array(
      fc.oneof(
        fc.constantFrom(
          "X-Correlation-ID: abc\r\nX-Injected: 1",
          "X-Correlation-ID: a\u0000b",
          "X-Correlation-ID: " + "z".repeat(200),
          "X-Deadline: \u0000",
          "Content-Length: 5\r\nContent-Length: 7",
          "Content-Length: -1",
          "Content-Length: 99999999999999999999",
          "Transfer-Encoding: chunked",
          "Transfer-Encoding: chunked, identity",
          " folded: continuation",
          "NoColonHeader",
          ": empty-name",
          "Host: ",
          "Host: a\r\nHost: b",
          "X-Big: " + "b".repeat(20_000),
          "Expect: 100-continue",
          "Content-Type: application/json\u0000",
          "Authorization: Bearer " + TOKEN + "\r\nX-Injected: 1",
        ),
        fc.tuple(headerName(), fc.string({ unit: "binary", maxLength: 30 })).map(([k, v]) => `${k}: ${v}`),
      ),
      { maxLength: 3 },
    ),
    auth: fc.boolean(),
    body: fc.oneof(fc.constant(""), fc.constantFrom('{"model_ref":"file:/etc/passwd","backend":"cpu","device":0}', "{", "\u0000\u0000", "0\r\n\r\n")),
  });

/** One raw HTTP/1.1 exchange; resolves with the status and header block, or null if the hive closed without answering. */
function rawExchange(port: number, bytes: Buffer): Promise<{ status: number; head: string } | null> {
  return new Promise((resolve) => {
    const sock = connect({ host: "127.0.0.1", port });
    let data = Buffer.alloc(0);
    const done = (v: { status: number; head: string } | null) => {
      clearTimeout(timer);
      sock.destroy();
      resolve(v);
    };
    const timer = setTimeout(() => done({ status: -1, head: "no answer (hang guard)" }), HANG_GUARD_MS);
    sock.on("connect", () => sock.end(bytes));
    sock.on("data", (d: Buffer) => {
      data = Buffer.concat([data, d]);
      const end = data.indexOf("\r\n\r\n");
      if (end >= 0) {
        const head = data.subarray(0, end).toString("latin1");
        done({ status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0), head });
      }
    });
    sock.on("error", () => done(null));
    sock.on("close", () => done(data.length ? { status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(data.toString("latin1"))?.[1] ?? 0), head: data.toString("latin1") } : null));
  });
}

// ------------------------------------------------------------------ the runs

/** Print the violations grouped by what went wrong (the part after the request), then clear them for the next test. */
function report(what: string): void {
  if (violations.length === 0) return;
  // FUZZ_DUMP=<file>: every violation in full, one a line (the test output shows the first 20).
  if (process.env.FUZZ_DUMP) writeFileSync(process.env.FUZZ_DUMP, violations.join("\n") + "\n", { flag: "a" });
  const kinds = new Map<string, number>();
  for (const v of violations) {
    const kind = v.slice(v.lastIndexOf("]: ") + 3).replace(/\d{3,}/g, "N").slice(0, 120);
    kinds.set(kind, (kinds.get(kind) ?? 0) + 1);
  }
  console.error(`fuzz ${what}: ${violations.length} violations, by kind:\n${[...kinds].map(([k, n]) => `  ${n} × ${k}`).join("\n")}`);
}

describe("fuzz", () => {
  test(`every route, ${REQUESTS} requests (seed ${SEED})`, async () => {
    violations.length = 0;
    console.log(`fuzz: seed ${SEED}, ${REQUESTS} requests over ${routes.length} routes from /openapi/json`);
    await fc.assert(
      // Every violation is collected with the request that caused it (not only the first: one
      // run shows them all); the property itself fails only when the fuzzer breaks.
      fc.asyncProperty(fc.array(reqArb(), { minLength: BATCH, maxLength: BATCH }), async (batch) => {
        await Promise.all(batch.map(send));
      }),
      { seed: SEED, numRuns: Math.ceil(REQUESTS / BATCH), endOnFailure: true },
    ).catch((e) => {
      console.error(String(e).slice(0, 6000));
      violations.push(`fast-check: ${String(e).split("\n")[0]}`);
    });
    report("fetch");
    expect(violations.slice(0, 20)).toEqual([]);
    expect(sent).toBeGreaterThanOrEqual(REQUESTS * 0.95);
  }, 600_000);

  test(`raw requests fetch would not send, ${RAW_REQUESTS} (seed ${SEED})`, async () => {
    violations.length = 0;
    const port = Number(new URL(hive.url).port);
    let answered = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(rawArb(), { minLength: BATCH, maxLength: BATCH }), async (batch) => {
        await Promise.all(
          batch.map(async (r) => {
            const lines = [`${r.method} ${r.target} HTTP/1.1`, "Host: 127.0.0.1", ...r.headers, "Connection: close"];
            if (r.auth) lines.push(`Authorization: Bearer ${TOKEN}`);
            if (r.body) lines.push(`Content-Length: ${Buffer.byteLength(r.body, "latin1")}`);
            const bytes = Buffer.from(`${lines.join("\r\n")}\r\n\r\n${r.body}`, "latin1");
            const got = await rawExchange(port, bytes);
            sent++;
            if (!got) return; // closed without an answer: Bun's parser refused the bytes
            answered++;
            const requestLine = `${r.method} ${r.target} HTTP/1.1`;
            if (got.status === -1) violations.push(`raw ${JSON.stringify(r).slice(0, 300)}: ${got.head}`);
            else if (got.status === 505 && !/^[A-Z]+ [\x21-\x7e]+ HTTP\/1\.1$/.test(requestLine) && got.head.startsWith(BUN_PARSER_505)) {
              parserRefusals++; // Bun's HTTP parser, before the hive: see BUN_PARSER_505
            } else if (got.status >= 500) violations.push(`raw ${JSON.stringify(r).slice(0, 300)}: status ${got.status}: ${got.head.slice(0, 200)}`);
            if (/^x-injected:/im.test(got.head)) violations.push(`raw ${JSON.stringify(r).slice(0, 300)}: an injected header came back`);
          }),
        );
      }),
      { seed: SEED, numRuns: Math.ceil(RAW_REQUESTS / BATCH), endOnFailure: true },
    ).catch((e) => {
      console.error(String(e).slice(0, 6000));
      violations.push(`fast-check: ${String(e).split("\n")[0]}`);
    });
    report("raw");
    expect(violations.slice(0, 20)).toEqual([]);
    expect(answered).toBeGreaterThan(0);
    console.log(`fuzz raw: ${answered} answered, ${parserRefusals} refused with 505 by Bun's HTTP parser (malformed request line)`);
  }, 600_000);

  test("afterwards: no process spawned, no file touched outside the data dir, nothing crashed, health within 100 ms", async () => {
    expect(spawned).toBe(0);
    const newChildren = [...children()].filter((pid) => !childrenBefore.has(pid));
    expect(newChildren).toEqual([]);
    expect(existsSync(canary)).toBe(false);
    const after = snapshot(parent, hive.dataDir);
    const changed = [...new Set([...snapshotBefore.keys(), ...after.keys()])].filter((p) => snapshotBefore.get(p) !== after.get(p));
    expect(changed).toEqual([]);
    const crashes = hive.logs.filter((l) => /"msg":"(request crashed|unhandled error|server error)"/.test(l));
    expect(crashes.slice(0, 5)).toEqual([]);
    const t0 = performance.now();
    const res = await fetch(`${hive.url}/v1/health`);
    await res.arrayBuffer();
    expect(res.status).toBe(200);
    expect(performance.now() - t0).toBeLessThan(100);
    console.log(`fuzz: ${sent} requests sent, 0 violations; ${parserRefusals} refused by Bun's HTTP parser before the hive (431, 505)`);
  });
});
