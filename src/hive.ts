/**
 * Builds the daemon from a loaded config: services, app, socket and teardown order.
 * main.ts owns the process (argv, signals, exit codes); this is what tests start in-process.
 */
import { mkdirSync } from "node:fs";
import type { LoadedConfig } from "./config.ts";
import { bindPolicyViolation, tokenFingerprint } from "./shared/auth-min.ts";
import type { Logger } from "./shared/logger.ts";
import { createApp } from "./app.ts";
import { serve, type HiveServer } from "./server.ts";
import { ShutdownCoordinator } from "./shutdown.ts";
import { VERSION } from "./version.ts";

export class StartupError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "StartupError";
  }
}

export interface Hive {
  server: HiveServer;
  shutdown: ShutdownCoordinator;
  url: string;
}

export async function startHive(loaded: LoadedConfig, logger: Logger): Promise<Hive> {
  const { config, secrets, resolved } = loaded;
  const violation = bindPolicyViolation(resolved.host, secrets.apiToken);
  if (violation) throw new StartupError(violation);

  for (const dir of [resolved.dataDir, resolved.modelsDir, resolved.logsDir]) mkdirSync(dir, { recursive: true });

  const shutdown = new ShutdownCoordinator(logger, config.shutdown.total_timeout_s * 1000);
  const app = createApp({ config, logger, apiToken: secrets.apiToken });

  let server: HiveServer;
  try {
    server = serve((request) => app.fetch(request), {
      host: resolved.host,
      port: resolved.port,
      bodyLimitBytes: config.server.body_limit_bytes,
      logger,
    });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "EADDRINUSE") {
      throw new StartupError(`cannot bind ${config.server.addr}: the address is already in use (is another rbee-hive running?)`);
    }
    throw new StartupError(`cannot bind ${config.server.addr}: ${(e as Error).message}`);
  }

  // Teardown order: stop accepting first; open streams end through shutdown.signal.
  shutdown.register("http server", () => server.stop(false).catch(() => server.stop(true)));

  logger.info("rbee-hive listening", {
    url: server.url,
    version: VERSION,
    data_dir: resolved.dataDir,
    models_dir: resolved.modelsDir,
    auth: secrets.apiToken ? tokenFingerprint(secrets.apiToken) : "off (loopback only)",
    config: loaded.source,
  });
  return { server, shutdown, url: server.url };
}
