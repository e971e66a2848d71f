/** The README's table of config keys is the schema's: same keys, same defaults. */
import { expect, test } from "bun:test";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { defaultConfig } from "../src/config.ts";
import { ROOT } from "./helpers.ts";

test("every key and default in the README's hive.toml block matches the config schema", () => {
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  const start = readme.indexOf("Every key and its default");
  const block = /```toml\n([\s\S]*?)```/.exec(readme.slice(start))?.[1];
  expect(block).toBeDefined();
  const documented = Bun.TOML.parse(block!) as Record<string, unknown>;
  const actual = defaultConfig("~") as unknown as Record<string, Record<string, unknown>>;
  actual.paths!.data_dir = "~/.rbee";
  actual.workers!.profiles = undefined; // documented as a comment: profiles have their own section
  expect(JSON.parse(JSON.stringify(documented))).toEqual(JSON.parse(JSON.stringify(actual)));
});

test("the README's code map names every top-level folder of src/, and only folders that exist", () => {
  const readme = readFileSync(join(ROOT, "README.md"), "utf8");
  const map = readme.slice(readme.indexOf("**Code map**"), readme.indexOf("Services never import Elysia"));
  const named = [...map.matchAll(/^\s*\| `(src\/[a-z-]+\/)` \|/gm)].map((m) => m[1]);
  const actual = readdirSync(join(ROOT, "src"), { withFileTypes: true })
    .filter((d) => d.isDirectory())
    .map((d) => `src/${d.name}/`);
  expect(named.sort()).toEqual(actual.sort());
});
