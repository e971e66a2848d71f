/**
 * Configuration: one TypeBox schema, layered defaults < TOML file < environment < flags,
 * validated once at startup. Every duration is a number of seconds and may be fractional.
 */
import { t } from "./shared/schema.ts";
import { Value, ValueErrorType } from "@sinclair/typebox/value";
import { homedir } from "node:os";
import { isAbsolute, join, resolve } from "node:path";
import { readFileSync } from "node:fs";
import type { CliFlags } from "./cli.ts";
import { bindPolicyViolation } from "./shared/auth-min.ts";
import { DEFAULT_QUANT_PREFERENCE } from "./provisioner/select.ts";

const Seconds = (description: string, minimum = 0) => t.Number({ minimum, description });
const Port = t.Integer({ minimum: 1, maximum: 65535 });

export const WorkerProfileSchema = t.Object(
  {
    binary: t.String({ minLength: 1, description: "executable name (looked up) or absolute path" }),
    args: t.Array(t.String(), { description: "argument templates: {worker_id} {model_path} {model_ref} {backend} {device} {port} {callback_url}" }),
    readiness: t.Union([t.Literal("callback"), t.Literal("http")]),
    readiness_path: t.String({ pattern: "^/", description: "polled until 2xx when readiness = http" }),
    health_path: t.String({ pattern: "^/" }),
    healthy_status: t.Array(t.String(), { description: "accepted values of the JSON `status` field of a 2xx health answer" }),
    backends: t.Array(t.String({ pattern: "^[A-Za-z0-9_-]+$" }), { minItems: 1 }),
    env: t.Record(t.String(), t.String()),
  },
  { additionalProperties: false },
);
export type WorkerProfile = typeof WorkerProfileSchema.static;

export const HiveConfigSchema = t.Object(
  {
    server: t.Object(
      {
        addr: t.String({ minLength: 1, description: "HOST:PORT to bind" }),
        body_limit_bytes: t.Integer({ minimum: 1024 }),
        log_format: t.Union([t.Literal("auto"), t.Literal("pretty"), t.Literal("json")]),
        sse_keepalive_s: Seconds("comment line on idle SSE streams", 0.01),
        events_buffer: t.Integer({ minimum: 1, description: "events kept for Last-Event-ID replay" }),
      },
      { additionalProperties: false },
    ),
    paths: t.Object(
      {
        data_dir: t.String({ minLength: 1 }),
        models_dir: t.Optional(t.String({ minLength: 1 })),
        allowed_model_roots: t.Array(t.String({ minLength: 1 })),
      },
      { additionalProperties: false },
    ),
    workers: t.Object(
      {
        binary: t.String({ description: "overrides the default profile's binary (RBEE_WORKER_BINARY)" }),
        host: t.String({ minLength: 1, description: "host workers listen on (RBEE_WORKER_HOST)" }),
        port_min: Port,
        port_max: Port,
        default_profile: t.String({ minLength: 1 }),
        profiles: t.Record(t.String({ pattern: "^[A-Za-z0-9_-]+$" }), t.Partial(WorkerProfileSchema)),
        loading_stall_timeout_s: Seconds("stop a loading worker that printed nothing for this long", 0.01),
        loading_max_s: Seconds("hard cap on loading, output or not", 0.01),
        ready_poll_interval_s: Seconds("/health poll after the ready callback", 0.001),
        stop_grace_s: Seconds("SIGTERM → SIGKILL grace"),
        silent: t.Boolean({ description: "do not echo worker output (RBEE_SILENT)" }),
        log_ring_lines: t.Integer({ minimum: 10 }),
        log_file_max_mb: t.Number({ exclusiveMinimum: 0, description: "a worker log over this size is rotated to .1 at the next start" }),
        exited_retention_s: Seconds("how long the record of a gone worker stays readable"),
      },
      { additionalProperties: false },
    ),
    monitor: t.Object(
      {
        interval_s: Seconds("health check period", 0.01),
        timeout_s: Seconds("per-check HTTP timeout", 0.01),
        failure_threshold: t.Integer({ minimum: 1 }),
        heartbeat_stale_s: Seconds("heartbeat age that marks a worker unhealthy", 0.01),
        startup_grace_s: Seconds("no health checks this long after a worker became ready"),
      },
      { additionalProperties: false },
    ),
    idle: t.Object(
      {
        check_interval_s: Seconds("reserved for the idle stop", 0.01),
        timeout_s: Seconds("reserved for the idle stop; 0 = never"),
      },
      { additionalProperties: false },
    ),
    restart: t.Object(
      {
        enabled: t.Boolean(),
        max_attempts: t.Integer({ minimum: 0 }),
        window_s: Seconds("window of max_attempts", 0.01),
        base_backoff_s: Seconds("first backoff"),
        max_backoff_s: Seconds("backoff cap"),
        jitter: t.Number({ minimum: 0, maximum: 1 }),
        reset_after_s: Seconds("healthy running time that resets the counters"),
        breaker_failures: t.Integer({ minimum: 1 }),
        breaker_window_s: Seconds("window of breaker_failures", 0.01),
        max_load_failures: t.Integer({ minimum: 0, description: "consecutive load failures after which no restart" }),
      },
      { additionalProperties: false },
    ),
    shutdown: t.Object(
      {
        worker_grace_s: Seconds("per worker SIGTERM → SIGKILL"),
        total_timeout_s: Seconds("bound on the whole shutdown", 0.01),
      },
      { additionalProperties: false },
    ),
    downloads: t.Object(
      {
        hf_endpoint: t.String({ pattern: "^https?://" }),
        quant_preference: t.Array(t.String({ minLength: 1 }), { minItems: 1 }),
        part_size_mb: t.Number({ exclusiveMinimum: 0 }),
        parallel_parts: t.Integer({ minimum: 1, maximum: 64 }),
        max_retries: t.Integer({ minimum: 0 }),
        stall_timeout_s: Seconds("abort and retry a part that received nothing this long", 0.01),
        disk_margin_mb: t.Number({ minimum: 0 }),
        finished_ttl_s: Seconds("finished downloads stay answerable this long"),
        progress_interval_s: Seconds("progress event throttle", 0.001),
      },
      { additionalProperties: false },
    ),
    queen: t.Object(
      {
        callback_url: t.String({ description: "QUEEN_CALLBACK_URL; empty = no forwarding" }),
        hive_id: t.String(),
        heartbeat_interval_s: Seconds("hive → queen heartbeat", 0.01),
      },
      { additionalProperties: false },
    ),
    audit: t.Object(
      {
        mode: t.Union([t.Literal("off"), t.Literal("local")]),
        dir: t.String(),
      },
      { additionalProperties: false },
    ),
  },
  { additionalProperties: false },
);
export type HiveConfig = typeof HiveConfigSchema.static;

/** The upstream llm-worker-rbee command line (protocol §2), readiness by callback. */
export const DEFAULT_WORKER_PROFILE: WorkerProfile = {
  binary: "llm-worker-rbee",
  args: [
    "--worker-id", "{worker_id}", "--model", "{model_path}", "--model-ref", "{model_ref}",
    "--backend", "{backend}", "--device", "{device}", "--port", "{port}", "--callback-url", "{callback_url}",
  ],
  readiness: "callback",
  readiness_path: "/health",
  health_path: "/health",
  healthy_status: ["healthy"],
  backends: ["cpu", "cuda", "metal"],
  env: {},
};

export function defaultConfig(home = homedir()): HiveConfig {
  return {
    server: { addr: "127.0.0.1:9200", body_limit_bytes: 1024 * 1024, log_format: "auto", sse_keepalive_s: 10, events_buffer: 1000 },
    paths: { data_dir: join(home, ".rbee"), allowed_model_roots: [] },
    workers: {
      binary: "",
      host: "127.0.0.1",
      port_min: 8081,
      port_max: 9000,
      default_profile: "llm-worker-rbee",
      profiles: {},
      loading_stall_timeout_s: 300,
      loading_max_s: 1800,
      ready_poll_interval_s: 0.05,
      stop_grace_s: 10,
      silent: false,
      log_ring_lines: 500,
      log_file_max_mb: 16,
      exited_retention_s: 600,
    },
    monitor: { interval_s: 5, timeout_s: 5, failure_threshold: 3, heartbeat_stale_s: 60, startup_grace_s: 0 },
    idle: { check_interval_s: 60, timeout_s: 300 },
    restart: {
      enabled: true,
      max_attempts: 3,
      window_s: 300,
      base_backoff_s: 1,
      max_backoff_s: 60,
      jitter: 0.2,
      reset_after_s: 300,
      breaker_failures: 5,
      breaker_window_s: 300,
      max_load_failures: 2,
    },
    shutdown: { worker_grace_s: 10, total_timeout_s: 30 },
    downloads: {
      hf_endpoint: "https://huggingface.co",
      quant_preference: [...DEFAULT_QUANT_PREFERENCE],
      part_size_mb: 64,
      parallel_parts: 8,
      max_retries: 6,
      stall_timeout_s: 30,
      disk_margin_mb: 1024,
      finished_ttl_s: 600,
      progress_interval_s: 0.1,
    },
    queen: { callback_url: "", hive_id: "", heartbeat_interval_s: 15 },
    audit: { mode: "off", dir: "" },
  };
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "ConfigError";
  }
}

/** Secrets never live in the config object that gets logged or printed. */
export interface HiveSecrets {
  apiToken?: string;
  hfToken?: string;
}

export interface LoadedConfig {
  config: HiveConfig;
  secrets: HiveSecrets;
  /** Resolved absolute paths and bind address, derived once. */
  resolved: ResolvedPaths & { host: string; port: number };
  /** The config file that was read, if any. */
  source?: string;
}

export interface ResolvedPaths {
  dataDir: string;
  modelsDir: string;
  catalogPath: string;
  logsDir: string;
  auditDir: string;
}

type Env = Record<string, string | undefined>;
type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

/** Merge `over` into `base`: objects deeply, everything else replaced. */
function deepMerge(base: Obj, over: Obj): Obj {
  const out: Obj = { ...base };
  for (const [k, v] of Object.entries(over)) {
    out[k] = isObj(v) && isObj(out[k]) ? deepMerge(out[k] as Obj, v) : v;
  }
  return out;
}

function expandHome(p: string, home: string): string {
  return p === "~" ? home : p.startsWith("~/") ? join(home, p.slice(2)) : p;
}

/** Split HOST:PORT, with `[v6]:port` accepted. */
export function parseAddr(addr: string): { host: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(addr) ?? /^([^:]+):(\d+)$/.exec(addr);
  const port = m ? Number(m[2]) : NaN;
  // Port 0 asks the OS for a free port (tests).
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new ConfigError(`server.addr: "${addr}" is not HOST:PORT (e.g. 127.0.0.1:9200)`);
  }
  return { host: m[1]!, port };
}

function readToml(path: string): Obj {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new ConfigError(`config file ${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  try {
    return Bun.TOML.parse(text) as Obj;
  } catch (e) {
    throw new ConfigError(`config file ${path}: invalid TOML: ${(e as Error).message}`);
  }
}

/** Environment layer (names from the wire contract plus RBEE_*). */
function envLayer(env: Env): Obj {
  const layer: Obj = {};
  const set = (section: string, key: string, value: unknown) => {
    ((layer[section] ??= {}) as Obj)[key] = value;
  };
  if (env.RBEE_DATA_DIR) set("paths", "data_dir", env.RBEE_DATA_DIR);
  if (env.RBEE_MODEL_BASE_DIR) set("paths", "models_dir", env.RBEE_MODEL_BASE_DIR);
  if (env.RBEE_WORKER_HOST) set("workers", "host", env.RBEE_WORKER_HOST);
  if (env.RBEE_WORKER_BINARY) set("workers", "binary", env.RBEE_WORKER_BINARY);
  if (env.RBEE_SILENT !== undefined && env.RBEE_SILENT !== "" && env.RBEE_SILENT !== "0" && env.RBEE_SILENT !== "false") {
    set("workers", "silent", true);
  }
  if (env.QUEEN_CALLBACK_URL) set("queen", "callback_url", env.QUEEN_CALLBACK_URL);
  if (env.RBEE_HIVE_ID) set("queen", "hive_id", env.RBEE_HIVE_ID);
  if (env.LLORCH_AUDIT_MODE) set("audit", "mode", env.LLORCH_AUDIT_MODE);
  if (env.LLORCH_AUDIT_DIR) set("audit", "dir", env.LLORCH_AUDIT_DIR);
  if (env.HF_ENDPOINT) set("downloads", "hf_endpoint", env.HF_ENDPOINT.replace(/\/+$/, ""));
  return layer;
}

function flagLayer(flags: CliFlags): Obj {
  const layer: Obj = {};
  const set = (section: string, key: string, value: unknown) => {
    ((layer[section] ??= {}) as Obj)[key] = value;
  };
  if (flags.addr !== undefined) set("server", "addr", flags.addr);
  if (flags.dataDir !== undefined) set("paths", "data_dir", flags.dataDir);
  if (flags.modelsDir !== undefined) set("paths", "models_dir", flags.modelsDir);
  if (flags.logFormat !== undefined) set("server", "log_format", flags.logFormat);
  return layer;
}

/** `/monitor/interval_s` → `monitor.interval_s` */
const pointerToKey = (p: string) => p.replace(/^\//, "").replace(/\//g, ".") || "(root)";

function validate(merged: Obj): HiveConfig {
  const first = Value.Errors(HiveConfigSchema, merged).First();
  if (first) {
    const key = pointerToKey(first.path);
    if (first.type === ValueErrorType.ObjectAdditionalProperties) {
      // The error's path is the unexpected key itself; its schema is the enclosing section.
      const known = Object.keys(first.schema.properties ?? {}).join(", ");
      throw new ConfigError(`unknown config key ${key}; known keys here: ${known}`);
    }
    throw new ConfigError(`config key ${key}: ${first.message} (got ${JSON.stringify(first.value)})`);
  }
  return merged as HiveConfig;
}

export interface LoadConfigInput {
  flags?: CliFlags;
  env?: Env;
  home?: string;
}

/** Build the effective configuration. Throws ConfigError naming the bad key. */
export function loadConfig({ flags = {}, env = process.env, home = env.HOME || homedir() }: LoadConfigInput = {}): LoadedConfig {
  const source = flags.config ?? env.RBEE_CONFIG;
  let merged: Obj = defaultConfig(home) as unknown as Obj;
  if (source) merged = deepMerge(merged, readToml(source));
  merged = deepMerge(merged, envLayer(env));
  merged = deepMerge(merged, flagLayer(flags));
  const config = validate(merged);

  let { host, port } = parseAddr(config.server.addr);
  if (flags.port !== undefined) port = flags.port;
  config.server.addr = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
  if (config.workers.port_min > config.workers.port_max) {
    throw new ConfigError(`config key workers.port_min: ${config.workers.port_min} is above workers.port_max ${config.workers.port_max}`);
  }
  const profileName = config.workers.default_profile;
  if (profileName !== DEFAULT_PROFILE_NAME && !config.workers.profiles[profileName]) {
    throw new ConfigError(`config key workers.default_profile: no profile "${profileName}" under [workers.profiles]`);
  }

  const dataDir = resolve(expandHome(config.paths.data_dir, home));
  const modelsDir = resolve(expandHome(config.paths.models_dir ?? join(dataDir, "models"), home));
  config.paths.allowed_model_roots = config.paths.allowed_model_roots.map((r) => {
    const p = expandHome(r, home);
    if (!isAbsolute(p)) throw new ConfigError(`config key paths.allowed_model_roots: "${r}" is not an absolute path`);
    return resolve(p);
  });
  const token = env.LLORCH_API_TOKEN || undefined;
  const violation = bindPolicyViolation(host, token);
  if (violation) throw new ConfigError(violation);
  const auditDir = config.audit.dir ? resolve(expandHome(config.audit.dir, home)) : join(dataDir, "audit");
  return {
    config,
    secrets: { apiToken: token, hfToken: env.HF_TOKEN || undefined },
    resolved: { host, port, dataDir, modelsDir, catalogPath: join(dataDir, "models.db"), logsDir: join(dataDir, "logs"), auditDir },
    source,
  };
}

/** The profile used for a spawn: the built-in default merged with what the config says about it. */
export function resolveProfile(config: HiveConfig, name: string): WorkerProfile | undefined {
  const custom = config.workers.profiles[name];
  if (name !== DEFAULT_PROFILE_NAME && !custom) return undefined;
  return { ...DEFAULT_WORKER_PROFILE, ...custom };
}

export const DEFAULT_PROFILE_NAME = "llm-worker-rbee";
