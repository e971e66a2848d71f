#!/usr/bin/env bun
/**
 * rbee-hive entry point: flags → config → services → listen → signals. Daemon-only.
 *
 * Exit codes: 0 clean stop; 2 (EXIT_USAGE) the command line or configuration is wrong and nothing
 * was started (systemd should not retry); 1 (EXIT_FAILURE) the daemon could not start or did not
 * stop cleanly (address in use, data dir unusable, shutdown bound exceeded, second signal).
 */
import { parseCli, USAGE } from "./cli.ts";
import { ConfigError, loadConfig } from "./config.ts";
import { createLogger, parseLogLevel } from "./shared/logger.ts";
import { startHive, StartupError } from "./hive.ts";
import { VERSION_LINE } from "./version.ts";
import { EXIT_FAILURE, EXIT_USAGE } from "./exit-codes.ts";
import { GUARDIAN_ENV, runGuardian } from "./shared/group-guardian.ts";

async function main(argv: string[]): Promise<void> {
  // The compiled binary is also its own group guardian (group-guardian.ts); not a user command.
  if (process.env[GUARDIAN_ENV] === "1") await runGuardian();
  const command = parseCli(argv);
  switch (command.kind) {
    case "help":
      console.log(USAGE);
      return;
    case "version":
      console.log(VERSION_LINE);
      return;
    case "error":
      console.error(command.message);
      process.exit(command.exitCode);
  }

  let loaded;
  try {
    loaded = loadConfig({ flags: command.flags });
  } catch (e) {
    if (e instanceof ConfigError) {
      console.error(`rbee-hive: ${e.message}`);
      process.exit(EXIT_USAGE);
    }
    throw e;
  }
  const format =
    loaded.config.server.log_format === "auto" ? (process.stderr.isTTY ? "pretty" : "json") : loaded.config.server.log_format;
  const logger = createLogger({ format, level: parseLogLevel(process.env.RBEE_LOG) });

  let hive;
  try {
    hive = await startHive(loaded, logger);
  } catch (e) {
    if (e instanceof StartupError) {
      console.error(`rbee-hive: ${e.message}`);
      process.exit(EXIT_FAILURE);
    }
    throw e;
  }
  // Signals and POST /v1/shutdown end the same way: exit 0, or 1 when the bound was exceeded.
  hive.shutdown.installSignalHandlers();
  // A daemon must not die because one background task forgot a catch: log it loudly instead.
  process.on("unhandledRejection", (reason) => {
    logger.error("unhandled promise rejection (bug)", { err: (reason as Error)?.stack ?? String(reason) });
  });
  // A synchronous crash leaves state we cannot trust: take every worker group down with us.
  process.on("uncaughtException", (e) => {
    logger.error("uncaught exception (bug); killing workers and exiting", { err: e?.stack ?? String(e) });
    hive.shutdown.force();
    process.exit(EXIT_FAILURE);
  });
}

await main(process.argv.slice(2));
