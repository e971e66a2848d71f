import pkg from "../package.json" with { type: "json" };

/** Embedded at build time (the bundler inlines package.json). */
export const VERSION: string = pkg.version;
export const API_VERSION = "v1";

// Replaced by scripts/build.ts (`define`); undefined globals when run from source with `bun src/main.ts`.
declare const RBEE_BUILD_COMMIT: string | undefined;
declare const RBEE_BUILD_TARGET: string | undefined;

/** The git commit the binary was built from; "dev" when running from source. */
export const BUILD_COMMIT: string = typeof RBEE_BUILD_COMMIT === "string" ? RBEE_BUILD_COMMIT : "dev";
/** The release target (linux-x64, linux-x64-baseline, …); the running platform when run from source. */
export const BUILD_TARGET: string = typeof RBEE_BUILD_TARGET === "string" ? RBEE_BUILD_TARGET : `${process.platform}-${process.arch}`;

/** What `rbee-hive --version` prints, e.g. `rbee-hive 0.1.0 (commit abc1234, linux-x64)` (the build's smoke test expects it too). */
export const versionLine = (commit: string, target: string) => `rbee-hive ${VERSION} (commit ${commit}, ${target})`;
export const VERSION_LINE = versionLine(BUILD_COMMIT, BUILD_TARGET);
