import { parseArgs } from "node:util";
import { EXIT_USAGE } from "./exit-codes.ts";

/**
 * Daemon-only command line. The bare command runs the daemon; a leading `daemon` word is accepted
 * because queen-rbee starts the hive as `rbee-hive daemon --addr …`. Everything else is driven over HTTP.
 */
export interface CliFlags {
  addr?: string;
  port?: number;
  config?: string;
  dataDir?: string;
  modelsDir?: string;
  logFormat?: "pretty" | "json";
}

export type CliCommand =
  | { kind: "run"; flags: CliFlags }
  | { kind: "version" }
  | { kind: "help" }
  | { kind: "error"; message: string; exitCode: typeof EXIT_USAGE };

/** Upstream subcommands that moved to the HTTP API, and where. */
export const REMOVED_SUBCOMMANDS: Record<string, string> = {
  models: "use GET /v1/models and POST /v1/models/download",
  worker: "use POST /v1/workers/spawn, GET /v1/workers/list and POST /v1/workers/stop",
  status: "use GET /v1/health and GET /v1/workers/list",
  detect: "use GET /v1/devices",
};

export const USAGE = `rbee-hive — host agent of an rbee LLM cluster (daemon-only; driven over HTTP)

Usage: rbee-hive [daemon] [options]

Options:
  --addr HOST:PORT        bind address (default 127.0.0.1:9200)
  --port N                bind port, overrides the port of --addr
  --config FILE           TOML config file (or RBEE_CONFIG)
  --data-dir DIR          data directory (default ~/.rbee)
  --models-dir DIR        models directory (default <data dir>/models)
  --log-format pretty|json
  --version               print the version and exit
  --help                  print this help and exit

HTTP API: GET /openapi on the running daemon is the reference (GET /openapi/json the OpenAPI spec).`;

const err = (message: string): CliCommand => ({ kind: "error", message, exitCode: EXIT_USAGE });
const unknownOption = (name: string) =>
  err(`rbee-hive: unknown option "${name}"; the hive is daemon-only and driven over its HTTP API (see --help)`);

const OPTIONS = {
  addr: { type: "string" },
  port: { type: "string" },
  config: { type: "string" },
  "data-dir": { type: "string" },
  "models-dir": { type: "string" },
  "log-format": { type: "string" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "V" },
} as const;

export function parseCli(argv: string[]): CliCommand {
  const args = argv[0] === "daemon" ? argv.slice(1) : argv;
  let parsed: ReturnType<typeof parseArgs<{ args: string[]; options: typeof OPTIONS; allowPositionals: true; strict: true }>>;
  try {
    parsed = parseArgs({ args, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (e) {
    // parseArgs names the option in its message ('--addr <value>', '-h, --help'); ours stay short and stable.
    const message = (e as Error).message;
    const name = /'(?:-\w, )?(--?[\w-]+)/.exec(message)?.[1] ?? "?";
    if ((e as { code?: string }).code !== "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") return unknownOption(name);
    return err(message.includes("does not take an argument") ? `rbee-hive: ${name} takes no value` : `rbee-hive: ${name} needs a value (see --help)`);
  }
  const { values, positionals } = parsed;
  if (values.help) return { kind: "help" };
  if (values.version) return { kind: "version" };
  if (positionals.length > 0) {
    const word = positionals[0]!;
    const hint = REMOVED_SUBCOMMANDS[word];
    return err(
      hint
        ? `rbee-hive: the "${word}" command was removed; the hive is daemon-only: ${hint}`
        : `rbee-hive: unknown command "${word}"; the hive is daemon-only and driven over its HTTP API (see --help)`,
    );
  }
  for (const [name, value] of Object.entries(values)) {
    if (value === "") return err(`rbee-hive: --${name} needs a value (see --help)`);
  }
  const flags: CliFlags = {};
  if (values.addr !== undefined) flags.addr = values.addr;
  if (values.port !== undefined) {
    const port = Number(values.port);
    if (!Number.isInteger(port) || port < 1 || port > 65535) return err(`rbee-hive: --port must be 1..65535, got "${values.port}"`);
    flags.port = port;
  }
  if (values.config !== undefined) flags.config = values.config;
  if (values["data-dir"] !== undefined) flags.dataDir = values["data-dir"];
  if (values["models-dir"] !== undefined) flags.modelsDir = values["models-dir"];
  const logFormat = values["log-format"];
  if (logFormat !== undefined) {
    if (logFormat !== "pretty" && logFormat !== "json") return err(`rbee-hive: --log-format must be pretty or json, got "${logFormat}"`);
    flags.logFormat = logFormat;
  }
  return { kind: "run", flags };
}
