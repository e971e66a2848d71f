/**
 * Configuration: one TypeBox schema, layered defaults < TOML file < environment < flags,
 * validated once at startup. Every duration is a number of seconds and may be fractional.
 */
import { t } from "./shared/schema.ts";
import { Value, ValueErrorType } from "@sinclair/typebox/value";
import { homedir, hostname } from "node:os";
import { isAbsolute, join, resolve } from "node:path";
import { readFileSync } from "node:fs";
import type { CliFlags } from "./cli.ts";
import { bindPolicyViolation } from "./shared/auth-min.ts";

// Every default lives here, in the schema (`default:`): defaultConfig() is derived from it, the
// README's key table is checked against it, and services receive values, never a second default.
const Seconds = (default_: number, description: string, minimum = 0) => t.Number({ minimum, default: default_, description });
const Port = (default_: number) => t.Integer({ minimum: 1, maximum: 65535, default: default_ });
const Section = <T extends Parameters<typeof t.Object>[0]>(properties: T) => t.Object(properties, { additionalProperties: false, default: {} });

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
    inference_path: t.String({ pattern: "^/", description: "where POST /v1/workers/{id}/inference forwards" }),
    progress_path: t.String({ pattern: "^(/.*)?$", description: "the worker's loading progress SSE, relayed while it loads (\"\" = none)" }),
    slots: t.Union([t.Integer({ minimum: 1, maximum: 1024 }), t.Literal("props")], {
      description: 'requests the worker serves at once; "props" = read total_slots from its GET /props (llama-server)',
    }),
  },
  { additionalProperties: false },
);
export type WorkerProfile = typeof WorkerProfileSchema.static;

/** GGUF quantizations in the order a plain `hf:org/repo` picks them. */
const QUANT_PREFERENCE = ["Q4_K_M", "Q4_0", "Q8_0", "Q5_K_M", "Q4_K_S", "Q5_0", "Q6_K", "Q3_K_M", "F16", "BF16"];

export const HiveConfigSchema = t.Object(
  {
    server: Section({
      addr: t.String({ minLength: 1, default: "127.0.0.1:9200", description: "HOST:PORT to bind" }),
      body_limit_bytes: t.Integer({ minimum: 1024, default: 1024 * 1024 }),
      log_format: t.Union([t.Literal("auto"), t.Literal("pretty"), t.Literal("json")], { default: "auto" }),
      sse_keepalive_s: Seconds(10, "comment line on idle SSE streams", 0.01),
      events_buffer: t.Integer({ minimum: 1, default: 1000, description: "events kept for Last-Event-ID replay" }),
    }),
    paths: Section({
      data_dir: t.String({ minLength: 1, default: "~/.rbee" }),
      models_dir: t.Optional(t.String({ minLength: 1, description: "default <data_dir>/models" })),
      allowed_model_roots: t.Array(t.String({ minLength: 1 }), { default: [] }),
    }),
    workers: Section({
      binary: t.String({ default: "", description: "overrides the default profile's binary (RBEE_WORKER_BINARY)" }),
      host: t.String({ minLength: 1, default: "127.0.0.1", description: "host workers listen on (RBEE_WORKER_HOST)" }),
      port_min: Port(8081),
      port_max: Port(9000),
      default_profile: t.String({ minLength: 1, default: "llm-worker-rbee" }),
      profiles: t.Record(t.String({ pattern: "^[A-Za-z0-9_-]+$" }), t.Partial(WorkerProfileSchema), { default: {} }),
      loading_stall_timeout_s: Seconds(300, "stop a loading worker that printed nothing for this long", 0.01),
      loading_max_s: Seconds(1800, "hard cap on loading, output or not", 0.01),
      ready_poll_interval_s: Seconds(0.05, "/health poll after the ready callback", 0.001),
      stop_grace_s: Seconds(10, "SIGTERM → SIGKILL grace"),
      silent: t.Boolean({ default: false, description: "do not echo worker output (RBEE_SILENT)" }),
      log_ring_lines: t.Integer({ minimum: 10, default: 500 }),
      log_file_max_mb: t.Number({ exclusiveMinimum: 0, default: 16, description: "a worker log over this size is rotated to .1 at the next start" }),
      exited_retention_s: Seconds(600, "how long the record of a gone worker stays readable"),
      keep_workers_on_exit: t.Boolean({
        default: false,
        description: "a stop of the hive leaves its workers running and the next hive adopts them (RBEE_KEEP_WORKERS_ON_EXIT)",
      }),
      proxy_body_limit_mb: t.Number({ exclusiveMinimum: 0, default: 32, description: "request body limit of the inference and proxy routes (streamed)" }),
      queue_max: t.Integer({ minimum: 0, default: 16, description: "requests that may wait for a free slot, per worker; more get 429" }),
      queue_timeout_s: Seconds(30, "a request waits this long for a free slot, then gets 429"),
      drain_timeout_s: Seconds(30, "stop and restart wait this long for requests in flight"),
    }),
    monitor: Section({
      interval_s: Seconds(5, "health check period", 0.01),
      timeout_s: Seconds(5, "per-check HTTP timeout", 0.01),
      failure_threshold: t.Integer({ minimum: 1, default: 3 }),
      heartbeat_stale_s: Seconds(60, "heartbeat age that marks a worker unhealthy", 0.01),
      startup_grace_s: Seconds(0, "no health checks this long after a worker became ready"),
    }),
    idle: Section({
      check_interval_s: Seconds(60, "how often workers are checked for idleness", 0.01),
      timeout_s: Seconds(300, "a worker idle this long is stopped; 0 = never (a spawn's keep_alive_s overrides)"),
    }),
    restart: Section({
      enabled: t.Boolean({ default: true }),
      max_attempts: t.Integer({ minimum: 0, default: 3 }),
      window_s: Seconds(300, "window of max_attempts", 0.01),
      base_backoff_s: Seconds(1, "first backoff"),
      max_backoff_s: Seconds(60, "backoff cap"),
      jitter: t.Number({ minimum: 0, maximum: 1, default: 0.2 }),
      reset_after_s: Seconds(300, "healthy running time that resets the counters"),
      breaker_failures: t.Integer({ minimum: 1, default: 5 }),
      breaker_window_s: Seconds(300, "window of breaker_failures", 0.01),
      max_load_failures: t.Integer({ minimum: 0, default: 2, description: "consecutive load failures after which no restart" }),
    }),
    shutdown: Section({
      worker_grace_s: Seconds(10, "per worker SIGTERM → SIGKILL"),
      total_timeout_s: Seconds(30, "bound on the whole shutdown", 0.01),
    }),
    downloads: Section({
      hf_endpoint: t.String({ pattern: "^https?://", default: "https://huggingface.co" }),
      quant_preference: t.Array(t.String({ minLength: 1 }), { minItems: 1, default: QUANT_PREFERENCE }),
      part_size_mb: t.Number({ exclusiveMinimum: 0, default: 64 }),
      parallel_parts: t.Integer({ minimum: 1, maximum: 64, default: 8 }),
      max_retries: t.Integer({ minimum: 0, default: 6 }),
      stall_timeout_s: Seconds(30, "abort and retry a part that received nothing this long", 0.01),
      disk_margin_mb: t.Number({ minimum: 0, default: 1024 }),
      finished_ttl_s: Seconds(600, "finished downloads stay answerable this long"),
      progress_interval_s: Seconds(0.1, "progress event throttle", 0.001),
    }),
    queen: Section({
      callback_url: t.String({ default: "", description: "QUEEN_CALLBACK_URL; empty = no ready forwarding and no heartbeat" }),
      hive_id: t.String({ default: "", description: "RBEE_HIVE_ID; empty = the host name" }),
      heartbeat_interval_s: Seconds(15, "hive → queen heartbeat", 0.01),
    }),
    audit: Section({
      mode: t.Union([t.Literal("off"), t.Literal("local")], { default: "off" }),
      dir: t.String({ default: "", description: "LLORCH_AUDIT_DIR; empty = <data_dir>/audit" }),
      queue_max: t.Integer({ minimum: 1, default: 10000, description: "audit lines waiting for the disk; beyond that events are dropped (logged, counted)" }),
      flush_timeout_s: Seconds(1, "a request waits this long at most for its auth event's line to be on disk", 0.001),
    }),
    resources: Section({
      cache_ttl_s: Seconds(2, "device detection answers (nvidia-smi, rocm-smi, RAM, disk) are reused this long"),
      tool_timeout_s: Seconds(5, "a detection tool that has not answered by then is killed; its GPUs count as absent", 0.01),
      gpu_reserve_mb: t.Number({ minimum: 0, default: 512, description: "VRAM kept free on every GPU" }),
      ram_reserve_mb: t.Number({ minimum: 0, default: 2048, description: "RAM kept free for the host" }),
      overhead_mb: t.Number({ minimum: 0, default: 1024, description: "added to every memory estimate: runtime context, compute buffers" }),
      context_cap: t.Integer({ minimum: 1, default: 4096, description: "a model's own context is capped at this when the spawn names none" }),
    }),
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
  inference_path: "/v1/inference",
  progress_path: "/v1/loading/progress",
  slots: 1,
};

/** The configuration with nothing set: the schema's defaults (`~` in paths stands for `home`). */
export function defaultConfig(home = homedir()): HiveConfig {
  const config = Value.Default(HiveConfigSchema, {}) as HiveConfig;
  config.paths.data_dir = expandHome(config.paths.data_dir, home);
  return structuredClone(config);
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
  // Set by the keep-workers systemd drop-in (packaging/keep-workers.conf); "false"/"0" switch it off.
  const keep = env.RBEE_KEEP_WORKERS_ON_EXIT;
  if (keep !== undefined && keep !== "") set("workers", "keep_workers_on_exit", keep !== "0" && keep !== "false");
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
/** This hive's id in heartbeats, audit lines and GET /v1/hive: `[queen] hive_id`, empty = the host name. */
export function hiveIdOf(config: HiveConfig): string {
  return config.queen.hive_id || hostname();
}

export function resolveProfile(config: HiveConfig, name: string): WorkerProfile | undefined {
  const custom = config.workers.profiles[name];
  if (name !== DEFAULT_PROFILE_NAME && !custom) return undefined;
  return { ...DEFAULT_WORKER_PROFILE, ...custom };
}

export const DEFAULT_PROFILE_NAME = "llm-worker-rbee";
