import { afterEach, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { ConfigError, loadConfig, parseAddr, resolveProfile } from "../src/config.ts";
import { tempDir } from "./helpers.ts";

const dirs: Array<() => void> = [];
afterEach(() => dirs.splice(0).forEach((c) => c()));

function withFile(toml: string): string {
  const d = tempDir();
  dirs.push(d.cleanup);
  const file = join(d.path, "hive.toml");
  writeFileSync(file, toml);
  return file;
}

/** The message of the ConfigError that loadConfig must throw. */
function configError(input: Parameters<typeof loadConfig>[0]): string {
  try {
    loadConfig(input);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as Error).message;
  }
  throw new Error("expected a ConfigError");
}

describe("config", () => {
  test("embedded defaults: loopback 9200, data dir ~/.rbee, catalog and models under it", () => {
    const { config, resolved, secrets } = loadConfig({ env: {}, home: "/home/u" });
    expect(config.server.addr).toBe("127.0.0.1:9200");
    expect(resolved).toMatchObject({
      host: "127.0.0.1",
      port: 9200,
      dataDir: "/home/u/.rbee",
      modelsDir: "/home/u/.rbee/models",
      catalogPath: "/home/u/.rbee/models.db",
    });
    expect(config.monitor.failure_threshold).toBe(3);
    expect(config.restart).toMatchObject({ max_attempts: 3, base_backoff_s: 1, max_backoff_s: 60, jitter: 0.2 });
    expect(secrets.apiToken).toBeUndefined();
  });

  test("layering: defaults < TOML file < environment < flags", () => {
    const file = withFile(`
[server]
addr = "127.0.0.1:7000"
[paths]
data_dir = "/from/file"
[workers]
host = "10.0.0.5"
[monitor]
interval_s = 0.05
`);
    const fileOnly = loadConfig({ env: {}, flags: { config: file }, home: "/h" });
    expect(fileOnly.resolved.port).toBe(7000);
    expect(fileOnly.resolved.dataDir).toBe("/from/file");
    expect(fileOnly.config.monitor.interval_s).toBe(0.05);
    expect(fileOnly.config.workers.host).toBe("10.0.0.5");

    const env = { RBEE_DATA_DIR: "/from/env", RBEE_WORKER_HOST: "10.0.0.9", RBEE_CONFIG: file };
    const withEnv = loadConfig({ env, home: "/h" });
    expect(withEnv.resolved.dataDir).toBe("/from/env");
    expect(withEnv.config.workers.host).toBe("10.0.0.9");
    expect(withEnv.source).toBe(file);

    const withFlags = loadConfig({ env, flags: { dataDir: "/from/flag", port: 7100 }, home: "/h" });
    expect(withFlags.resolved.dataDir).toBe("/from/flag");
    expect(withFlags.resolved.port).toBe(7100);
    expect(withFlags.config.server.addr).toBe("127.0.0.1:7100");
  });

  test("contract environment names", () => {
    const { config, secrets, resolved } = loadConfig({
      env: {
        LLORCH_API_TOKEN: "0123456789abcdef",
        RBEE_MODEL_BASE_DIR: "/models",
        RBEE_SILENT: "1",
        QUEEN_CALLBACK_URL: "http://127.0.0.1:8080",
        LLORCH_AUDIT_MODE: "local",
        LLORCH_AUDIT_DIR: "/audit",
        HF_ENDPOINT: "http://127.0.0.1:1234/",
        HF_TOKEN: "hf_x",
        RBEE_WORKER_BINARY: "/opt/llm-worker-rbee",
        RBEE_HIVE_ID: "gpu-box-1",
      },
      home: "/h",
    });
    expect(secrets).toEqual({ apiToken: "0123456789abcdef", hfToken: "hf_x" });
    expect(resolved.modelsDir).toBe("/models");
    expect(resolved.auditDir).toBe("/audit");
    expect(config.workers.silent).toBe(true);
    expect(config.workers.binary).toBe("/opt/llm-worker-rbee");
    expect(config.queen).toMatchObject({ callback_url: "http://127.0.0.1:8080", hive_id: "gpu-box-1" });
    expect(config.audit.mode).toBe("local");
    expect(config.downloads.hf_endpoint).toBe("http://127.0.0.1:1234");
    // Secrets never end up in the config object (which may be logged).
    expect(JSON.stringify(config)).not.toContain("0123456789abcdef");
  });

  test("a wrong type names the key (the README's example, word for word)", () => {
    const file = withFile(`[monitor]\ninterval_s = "fast"\n`);
    expect(configError({ env: {}, flags: { config: file } })).toBe('config key monitor.interval_s: Expected number (got "fast")');
  });

  test("an unknown key is named, with the known ones (the README's example, word for word)", () => {
    const file = withFile(`[monitor]\nintervall_s = 5\n`);
    expect(configError({ env: {}, flags: { config: file } })).toBe(
      "unknown config key monitor.intervall_s; known keys here: interval_s, timeout_s, failure_threshold, heartbeat_stale_s, startup_grace_s",
    );
  });

  test("an unknown section is named, with the known ones", () => {
    const file = withFile(`[mointor]\ninterval_s = 5\n`);
    expect(configError({ env: {}, flags: { config: file } })).toBe(
      "unknown config key mointor; known keys here: server, paths, workers, monitor, idle, restart, shutdown, downloads, queen, audit, resources",
    );
  });

  test("negative durations, bad port ranges, bad TOML and missing files are refused", () => {
    expect(configError({ env: {}, flags: { config: withFile(`[restart]\nwindow_s = -1\n`) } })).toBe(
      "config key restart.window_s: Expected number to be greater or equal to 0.01 (got -1)",
    );
    expect(configError({ env: {}, flags: { config: withFile(`[workers]\nport_min = 9000\nport_max = 8000\n`) } })).toBe(
      "config key workers.port_min: 9000 is above workers.port_max 8000",
    );
    const badToml = withFile(`[server\n`);
    expect(configError({ env: {}, flags: { config: badToml } })).toBe(
      `config file ${badToml}: invalid TOML: TOML Parse error: Expected ']' to close a table header but found (0x0A)`,
    );
    expect(configError({ env: {}, flags: { config: "/nonexistent/hive.toml" } })).toBe("config file /nonexistent/hive.toml: cannot read (ENOENT)");
    expect(configError({ env: {}, flags: { addr: "localhost" } })).toBe('server.addr: "localhost" is not HOST:PORT (e.g. 127.0.0.1:9200)');
  });

  test("~ expands in paths and IPv6 addresses parse", () => {
    const file = withFile(`[paths]\ndata_dir = "~/hive-data"\n`);
    expect(loadConfig({ env: {}, flags: { config: file }, home: "/home/x" }).resolved.dataDir).toBe("/home/x/hive-data");
    expect(parseAddr("[::1]:9200")).toEqual({ host: "::1", port: 9200 });
  });

  test("worker profiles merge over the upstream default", () => {
    const file = withFile(`
[workers]
default_profile = "llama"
[workers.profiles.llama]
binary = "llama-server"
args = ["--model", "{model_path}", "--port", "{port}"]
readiness = "http"
healthy_status = ["ok"]
`);
    const { config } = loadConfig({ env: {}, flags: { config: file } });
    const p = resolveProfile(config, "llama")!;
    expect(p.readiness).toBe("http");
    expect(p.health_path).toBe("/health");
    expect(resolveProfile(config, "llm-worker-rbee")!.args).toContain("--callback-url");
    expect(resolveProfile(config, "nope")).toBeUndefined();
    expect(configError({ env: {}, flags: { config: withFile(`[workers]\ndefault_profile = "ghost"\n`) } })).toBe(
      'config key workers.default_profile: no profile "ghost" under [workers.profiles]',
    );
  });
});
