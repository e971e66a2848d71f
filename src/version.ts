import pkg from "../package.json" with { type: "json" };

/** Embedded at build time (the bundler inlines package.json). */
export const VERSION: string = pkg.version;
export const API_VERSION = "v1";
