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
  detect: "device detection is not served over HTTP yet",
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

export function parseCli(argv: string[]): CliCommand {
  const args = [...argv];
  if (args[0] === "daemon") args.shift();
  const flags: CliFlags = {};
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === "--help" || arg === "-h") return { kind: "help" };
    if (arg === "--version" || arg === "-V") return { kind: "version" };
    if (!arg.startsWith("-")) {
      const hint = REMOVED_SUBCOMMANDS[arg];
      return err(
        hint
          ? `rbee-hive: the "${arg}" command was removed; the hive is daemon-only: ${hint}`
          : `rbee-hive: unknown command "${arg}"; the hive is daemon-only and driven over its HTTP API (see --help)`,
      );
    }
    const eq = arg.indexOf("=");
    const name = eq > 0 ? arg.slice(0, eq) : arg;
    const takeValue = (): string | undefined => {
      if (eq > 0) return arg.slice(eq + 1);
      const v = args[i + 1];
      if (v === undefined || v.startsWith("--")) return undefined;
      i++;
      return v;
    };
    const value = takeValue();
    if (value === undefined || value === "") {
      if (["--addr", "--port", "--config", "--data-dir", "--models-dir", "--log-format"].includes(name)) {
        return err(`rbee-hive: ${name} needs a value (see --help)`);
      }
      return err(`rbee-hive: unknown option "${name}"; the hive is daemon-only and driven over its HTTP API (see --help)`);
    }
    switch (name) {
      case "--addr":
        flags.addr = value;
        break;
      case "--port": {
        const port = Number(value);
        if (!Number.isInteger(port) || port < 1 || port > 65535) return err(`rbee-hive: --port must be 1..65535, got "${value}"`);
        flags.port = port;
        break;
      }
      case "--config":
        flags.config = value;
        break;
      case "--data-dir":
        flags.dataDir = value;
        break;
      case "--models-dir":
        flags.modelsDir = value;
        break;
      case "--log-format":
        if (value !== "pretty" && value !== "json") return err(`rbee-hive: --log-format must be pretty or json, got "${value}"`);
        flags.logFormat = value;
        break;
      default:
        return err(`rbee-hive: unknown option "${name}"; the hive is daemon-only and driven over its HTTP API (see --help)`);
    }
  }
  return { kind: "run", flags };
}
