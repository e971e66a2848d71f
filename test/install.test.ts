/**
 * packaging/install.sh, run as root against a temporary root (RBEE_INSTALL_ROOT) with stand-ins for
 * systemctl and the user tools (test/fixtures/host-stubs.ts). The stub systemctl starts the real
 * installed binary from the installed unit, drop-ins and env file, so the script's health wait and
 * the token really reach a running hive. Every other command the script runs is logged, so the
 * token can be shown to stay off every command line.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import { chmodSync, existsSync, linkSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { freePort, pidAlive, tempDir } from "./helpers.ts";
import { buildHostRelease, createLoggingPath, createStubHost, REPO, runInstall, type Release, type RunResult, type StubHost } from "./fixtures/install-host.ts";

const UNIT_TEXT = readFileSync(join(REPO, "packaging/rbee-hive.service"), "utf8");
const DROPIN_TEXT = readFileSync(join(REPO, "packaging/keep-workers.conf"), "utf8");
const TOKEN = "tok-7f3a9c1e5b2d4f60a8e1";
const ENV_HEADER =
  "# rbee-hive settings for rbee-hive.service (mode 0600: it holds the token). Written by install.sh,\n" +
  "# which manages RBEE_ADDR and LLORCH_API_TOKEN and keeps every other line.\n";
const USERADD = "useradd --system --user-group --home-dir /var/lib/rbee-hive --no-create-home --shell /usr/sbin/nologin rbee-hive";

let files: ReturnType<typeof tempDir>;
/** The real build (scripts/build.ts --host). */
let real: Release;
/**
 * The real binary behind a small exec wrapper, as its own release with its own SHA256SUMS: it
 * behaves the same and spares each test hashing and copying 110 MB. `upgrade` is another one
 * (different bytes: a new release).
 */
let release: Release;
let upgrade: Release;
let loggingPath: string;

function wrappedRelease(name: string): Release {
  const dir = join(files.path, name);
  mkdirSync(dir);
  const binary = join(dir, `rbee-hive-${real.target}`);
  writeFileSync(binary, `#!/bin/sh\n# ${name}\nexec '${real.binary}' "$@"\n`);
  chmodSync(binary, 0o755);
  const sha = new Bun.CryptoHasher("sha256").update(readFileSync(binary)).digest("hex");
  writeFileSync(join(dir, "SHA256SUMS"), `${sha}  rbee-hive-${real.target}\n`);
  return { ...real, dir, binary };
}

beforeAll(async () => {
  if (process.getuid?.() !== 0) return;
  files = tempDir("rbee-install-test-");
  real = await buildHostRelease(join(files.path, "release"));
  release = wrappedRelease("release-1");
  upgrade = wrappedRelease("release-2");
  loggingPath = createLoggingPath(join(files.path, "logging-path"));
}, 120_000);

afterAll(() => files?.cleanup());

let work: ReturnType<typeof tempDir>;
let host: StubHost;
let port: number;
let tokenFile: string;

beforeEach(() => {
  work = tempDir("rbee-install-host-");
  host = createStubHost(work.path, loggingPath);
  port = freePort();
  tokenFile = join(work.path, "hive.token");
  writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
});

afterEach(() => {
  host.killAll();
  work.cleanup();
});

const at = (path: string) => join(host.root, path);
const read = (path: string) => readFileSync(at(path), "utf8");
const mode = (path: string) => statSync(at(path)).mode & 0o777;
const lines = (text: string) => text.split("\n").filter(Boolean);
/** Everything under the root, as paths relative to it. */
function tree(dir = host.root, prefix = ""): string[] {
  const entries = readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1));
  return entries.flatMap((e) =>
    e.isDirectory() ? [`${prefix}${e.name}/`, ...tree(join(dir, e.name), `${prefix}${e.name}/`)] : [`${prefix}${e.name}`],
  );
}
const health = (json: string) => `health: http://127.0.0.1:${port}/v1/health answered ${json}`;
const installArgs = (from = release) => ["--binary", from.binary, "--addr", "0.0.0.0", "--port", String(port), "--token-file", tokenFile];

/** The token is in the env file and nowhere else: not in the output, not on any command line. */
function expectTokenKept(...results: RunResult[]) {
  for (const r of results) expect(r.stdout + r.stderr).not.toContain(TOKEN);
  expect(host.calls().join("\n")).not.toContain(TOKEN);
  expect(host.commands().length).toBeGreaterThan(0);
  expect(host.commands().join("\n")).not.toContain(TOKEN);
}

async function workersList(token?: string): Promise<number> {
  const res = await fetch(`http://127.0.0.1:${port}/v1/workers/list`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
  await res.arrayBuffer();
  return res.status;
}

async function healthBody(): Promise<string> {
  return (await fetch(`http://127.0.0.1:${port}/v1/health`)).text();
}

const notRoot = process.getuid?.() !== 0;
if (notRoot) console.log("install.test.ts skipped: install.sh runs as root, and so must this test (CI does)");

describe.skipIf(notRoot)("install.sh", () => {
  test("fresh install: user in the GPU groups, binary, unit, env file 0600, enable, start, health", async () => {
    const r = await runInstall(host, installArgs(real));
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    const answered = await healthBody();
    expect(lines(r.stdout)).toEqual([
      `checksum: rbee-hive-${release.target} matches ${real.dir}/SHA256SUMS`,
      "create system user rbee-hive (home /var/lib/rbee-hive, groups: video render)",
      "add user rbee-hive to group video (GPU device nodes)",
      "add user rbee-hive to group render (GPU device nodes)",
      `install /usr/local/bin/rbee-hive: ${release.versionLine}`,
      "write /etc/rbee/hive.env (mode 0600)",
      "write /etc/systemd/system/rbee-hive.service (mode 0644)",
      health(answered),
      `rbee-hive installed: ${release.versionLine}, rbee-hive.service on 0.0.0.0:${port}`,
    ]);
    expect(JSON.parse(answered).status).toBe("alive");
    expect(host.changes()).toEqual([
      USERADD,
      "usermod -a -G video rbee-hive",
      "usermod -a -G render rbee-hive",
      "systemctl daemon-reload",
      "systemctl enable rbee-hive.service",
      "systemctl restart rbee-hive.service",
    ]);
    expect(readFileSync(join(host.state, "group"), "utf8")).toBe("video:x:44:rbee-hive\nrender:x:105:rbee-hive\nrbee-hive:x:900:\n");

    expect(tree()).toEqual([
      "etc/",
      "etc/rbee/",
      "etc/rbee/hive.env",
      "etc/systemd/",
      "etc/systemd/system/",
      "etc/systemd/system/rbee-hive.service",
      "usr/",
      "usr/local/",
      "usr/local/bin/",
      "usr/local/bin/rbee-hive",
      // Created by "systemd" (StateDirectory=) and filled by the hive.
      "var/",
      "var/lib/",
      "var/lib/rbee-hive/",
      ...tree(at("var/lib/rbee-hive"), "var/lib/rbee-hive/"),
    ]);
    expect(Bun.spawnSync(["cmp", real.binary, at("usr/local/bin/rbee-hive")]).exitCode).toBe(0);
    expect(mode("usr/local/bin/rbee-hive")).toBe(0o755);
    // The unit is packaging/rbee-hive.service byte for byte (default --prefix and --user).
    expect(read("etc/systemd/system/rbee-hive.service")).toBe(UNIT_TEXT);
    expect(mode("etc/systemd/system/rbee-hive.service")).toBe(0o644);
    expect(read("etc/rbee/hive.env")).toBe(`${ENV_HEADER}RBEE_ADDR=0.0.0.0:${port}\nLLORCH_API_TOKEN=${TOKEN}\n`);
    expect(mode("etc/rbee/hive.env")).toBe(0o600);

    // The hive runs from the installed binary, with the env file's token.
    expect(readFileSync(`/proc/${host.mainPid()}/cmdline`, "utf8").split("\0")).toEqual([
      at("usr/local/bin/rbee-hive"),
      "daemon",
      "--addr",
      `0.0.0.0:${port}`,
      "",
    ]);
    expect(await workersList()).toBe(401);
    expect(await workersList(TOKEN)).toBe(200);
    expectTokenKept(r);
  }, 60_000);

  test("a second run with the same arguments changes nothing and restarts nothing", async () => {
    expect((await runInstall(host, installArgs())).exitCode).toBe(0);
    const before = new Map(tree().map((p) => [p, statSync(at(p))]));
    const pid = host.mainPid();
    host.clearLogs();

    const r = await runInstall(host, installArgs());
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    expect(lines(r.stdout)).toEqual([
      `checksum: rbee-hive-${release.target} matches ${release.dir}/SHA256SUMS`,
      "nothing changed: rbee-hive.service is up to date and running",
      health(await healthBody()),
      `rbee-hive installed: ${release.versionLine}, rbee-hive.service on 0.0.0.0:${port}`,
    ]);
    expect(host.changes()).toEqual([]);
    expect(host.mainPid()).toBe(pid);
    for (const path of ["usr/local/bin/rbee-hive", "etc/systemd/system/rbee-hive.service", "etc/rbee/hive.env"]) {
      const now = statSync(at(path));
      expect({ path, ino: now.ino, mtime: now.mtimeMs }).toEqual({ path, ino: before.get(path)!.ino, mtime: before.get(path)!.mtimeMs });
    }
    expectTokenKept(r);
  }, 60_000);

  test("a stopped service is started again without rewriting anything", async () => {
    expect((await runInstall(host, installArgs())).exitCode).toBe(0);
    Bun.spawnSync([join(host.stubDir, "systemctl"), "stop", "rbee-hive.service"], { env: host.env });
    host.clearLogs();
    const r = await runInstall(host, installArgs());
    expect(r.exitCode).toBe(0);
    expect(host.changes()).toEqual(["systemctl start rbee-hive.service"]);
    expect(JSON.parse(await healthBody()).status).toBe("alive");
  }, 60_000);

  test("upgrade: the new binary replaces the old by rename, settings and token kept, one restart", async () => {
    expect((await runInstall(host, installArgs())).exitCode).toBe(0);
    const oldPid = host.mainPid();
    const oldInode = statSync(at("usr/local/bin/rbee-hive")).ino;
    const env = read("etc/rbee/hive.env");
    host.clearLogs();

    const r = await runInstall(host, ["--binary", upgrade.binary]);
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    expect(lines(r.stdout)).toEqual([
      `checksum: rbee-hive-${release.target} matches ${upgrade.dir}/SHA256SUMS`,
      `install /usr/local/bin/rbee-hive: ${release.versionLine}`,
      health(await healthBody()),
      `rbee-hive installed: ${release.versionLine}, rbee-hive.service on 0.0.0.0:${port}`,
    ]);
    expect(host.changes()).toEqual(["systemctl restart rbee-hive.service"]);
    expect(read("usr/local/bin/rbee-hive")).toBe(readFileSync(upgrade.binary, "utf8"));
    // rename(2): a new inode; the running hive kept the old one until it stopped. No staged file left.
    expect(statSync(at("usr/local/bin/rbee-hive")).ino).not.toBe(oldInode);
    expect(readdirSync(at("usr/local/bin"))).toEqual(["rbee-hive"]);
    expect(read("etc/rbee/hive.env")).toBe(env);
    expect(pidAlive(oldPid)).toBe(false);
    expect(host.mainPid()).not.toBe(oldPid);
    expect(await workersList()).toBe(401);
    expect(await workersList(TOKEN)).toBe(200);
    expectTokenKept(r);
  }, 60_000);

  test("--keep-workers adds the KillMode=process drop-in; a run without it removes it", async () => {
    expect((await runInstall(host, installArgs())).exitCode).toBe(0);
    host.clearLogs();
    const keep = await runInstall(host, ["--binary", release.binary, "--keep-workers"]);
    expect(keep.exitCode).toBe(0);
    expect(lines(keep.stdout)).toEqual([
      `checksum: rbee-hive-${release.target} matches ${release.dir}/SHA256SUMS`,
      "write /etc/systemd/system/rbee-hive.service.d/keep-workers.conf (mode 0644)",
      health(await healthBody()),
      `rbee-hive installed: ${release.versionLine}, rbee-hive.service on 0.0.0.0:${port}, workers kept across restarts`,
    ]);
    // The drop-in is in place (daemon-reload) before the restart that must spare the workers.
    expect(host.changes()).toEqual(["systemctl daemon-reload", "systemctl restart rbee-hive.service"]);
    expect(read("etc/systemd/system/rbee-hive.service.d/keep-workers.conf")).toBe(DROPIN_TEXT);
    expect(readFileSync(`/proc/${host.mainPid()}/environ`, "utf8").split("\0")).toContain("RBEE_KEEP_WORKERS_ON_EXIT=true");

    host.clearLogs();
    const drop = await runInstall(host, ["--binary", release.binary]);
    expect(drop.exitCode).toBe(0);
    expect(lines(drop.stdout)[1]).toBe("remove /etc/systemd/system/rbee-hive.service.d/keep-workers.conf (workers stop with the hive again)");
    expect(host.changes()).toEqual(["systemctl daemon-reload", "systemctl restart rbee-hive.service"]);
    expect(existsSync(at("etc/systemd/system/rbee-hive.service.d"))).toBe(false);
    expect(readFileSync(`/proc/${host.mainPid()}/environ`, "utf8").split("\0")).not.toContain("RBEE_KEEP_WORKERS_ON_EXIT=true");
  }, 60_000);

  test("--prefix and --user shape the unit; the installed unit still starts", async () => {
    const r = await runInstall(host, [...installArgs(), "--prefix", "/opt/rbee", "--user", "gpuhive"]);
    expect(r.exitCode).toBe(0);
    expect(read("etc/systemd/system/rbee-hive.service")).toBe(
      UNIT_TEXT.replace("ExecStart=/usr/local/bin/rbee-hive ", "ExecStart=/opt/rbee/bin/rbee-hive ").replace("\nUser=rbee-hive\n", "\nUser=gpuhive\n"),
    );
    expect(host.changes()[0]).toBe(USERADD.replace(/rbee-hive$/, "gpuhive"));
    expect(existsSync(at("opt/rbee/bin/rbee-hive"))).toBe(true);
    expect(existsSync(at("usr/local/bin"))).toBe(false);
    expect(JSON.parse(await healthBody()).status).toBe("alive");
  }, 60_000);

  test("--uninstall stops, disables and removes what it installed, keeps the data; --purge removes it and the user", async () => {
    expect((await runInstall(host, [...installArgs(), "--keep-workers"])).exitCode).toBe(0);
    const pid = host.mainPid();
    writeFileSync(at("var/lib/rbee-hive/models/kept.gguf"), "model");
    host.clearLogs();

    const r = await runInstall(host, ["--uninstall"]);
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    expect(lines(r.stdout)).toEqual([
      "remove /etc/systemd/system/rbee-hive.service.d/keep-workers.conf",
      "remove /etc/systemd/system/rbee-hive.service",
      "remove /etc/rbee/hive.env",
      "remove /usr/local/bin/rbee-hive",
      "kept /var/lib/rbee-hive (models, catalog, logs) and user rbee-hive; --purge removes them",
      "rbee-hive uninstalled",
    ]);
    // The drop-in goes first, so the stop runs with KillMode=mixed and takes kept workers along.
    expect(host.changes()).toEqual([
      "systemctl daemon-reload",
      "systemctl stop rbee-hive.service",
      "systemctl disable rbee-hive.service",
      "systemctl daemon-reload",
      "systemctl reset-failed rbee-hive.service",
    ]);
    expect(pidAlive(pid)).toBe(false);
    expect(tree().filter((p) => !p.startsWith("var/lib/rbee-hive/"))).toEqual(["etc/", "etc/systemd/", "etc/systemd/system/", "usr/", "usr/local/", "usr/local/bin/", "var/", "var/lib/"]);
    expect(existsSync(at("var/lib/rbee-hive/models.db"))).toBe(true);
    expect(read("var/lib/rbee-hive/models/kept.gguf")).toBe("model");

    host.clearLogs();
    const again = await runInstall(host, ["--uninstall"]);
    expect({ code: again.exitCode, out: again.stdout, changes: host.changes() }).toEqual({
      code: 0,
      out: "rbee-hive is not installed: nothing to do\n",
      changes: [],
    });

    const purge = await runInstall(host, ["--uninstall", "--purge"]);
    expect(purge.exitCode).toBe(0);
    expect(lines(purge.stdout)).toEqual(["remove /var/lib/rbee-hive (models, catalog, logs)", "remove user rbee-hive", "rbee-hive uninstalled"]);
    expect(host.changes()).toEqual(["userdel rbee-hive"]);
    expect(existsSync(at("var/lib/rbee-hive"))).toBe(false);
    expect(readFileSync(join(host.state, "passwd"), "utf8")).toBe("");
  }, 60_000);

  test("--dry-run says what it would do and changes nothing", async () => {
    const r = await runInstall(host, [...installArgs(), "--dry-run"]);
    expect(r.stderr).toBe("");
    expect(r.exitCode).toBe(0);
    expect(lines(r.stdout)).toEqual([
      `checksum: rbee-hive-${release.target} matches ${release.dir}/SHA256SUMS`,
      "would create system user rbee-hive (home /var/lib/rbee-hive, groups: video render)",
      `would run: ${USERADD}`,
      "would add user rbee-hive to group video (GPU device nodes)",
      "would run: usermod -a -G video rbee-hive",
      "would add user rbee-hive to group render (GPU device nodes)",
      "would run: usermod -a -G render rbee-hive",
      `would install /usr/local/bin/rbee-hive: ${release.versionLine}`,
      "would write /etc/rbee/hive.env (mode 0600)",
      "would write /etc/systemd/system/rbee-hive.service (mode 0644)",
      "would run: systemctl daemon-reload",
      "would run: systemctl enable rbee-hive.service",
      "would run: systemctl restart rbee-hive.service",
      `would wait for http://127.0.0.1:${port}/v1/health`,
    ]);
    expect(host.changes()).toEqual([]);
    expect(tree()).toEqual([]);
    expectTokenKept(r);
  }, 60_000);

  test("the token from stdin (--token-file -) reaches the hive and nothing else", async () => {
    const r = await runInstall(host, ["--binary", release.binary, "--addr", `0.0.0.0:${port}`, "--token-file", "-"], `${TOKEN}\n`);
    expect(r.exitCode).toBe(0);
    expect(read("etc/rbee/hive.env")).toBe(`${ENV_HEADER}RBEE_ADDR=0.0.0.0:${port}\nLLORCH_API_TOKEN=${TOKEN}\n`);
    expect(await workersList(TOKEN)).toBe(200);
    const uninstall = await runInstall(host, ["--uninstall"]);
    expectTokenKept(r, uninstall);
  }, 60_000);

  test("lines the operator added to the env file survive a reinstall", async () => {
    expect((await runInstall(host, installArgs())).exitCode).toBe(0);
    writeFileSync(at("etc/rbee/hive.env"), `${read("etc/rbee/hive.env")}RBEE_LOG=debug\n`);
    const r = await runInstall(host, ["--binary", release.binary, "--port", String(port)]);
    expect(r.exitCode).toBe(0);
    expect(read("etc/rbee/hive.env")).toBe(`${ENV_HEADER}RBEE_ADDR=0.0.0.0:${port}\nLLORCH_API_TOKEN=${TOKEN}\nRBEE_LOG=debug\n`);
  }, 60_000);

  test("bad arguments: exit 2, one line naming the problem, nothing touched", async () => {
    const cases: Array<[string[], string]> = [
      [["--bogus"], 'unknown argument "--bogus" (see --help)'],
      [["--port"], "--port needs a value (see --help)"],
      [["--binary="], "--binary needs a value (see --help)"],
      [["--port", "70000"], '--port must be 1..65535, got "70000" (see --help)'],
      [["--port", "9x"], '--port must be 1..65535, got "9x" (see --help)'],
      [["--port", "0"], '--port must be 1..65535, got "0" (see --help)'],
      [["--port", "99999999999999999999"], '--port must be 1..65535, got "99999999999999999999" (see --help)'],
      [["--addr", "::1"], 'an IPv6 --addr goes in brackets, e.g. [::1], got "::1" (see --help)'],
      [["--addr", "a b"], '--addr: not a host name or address: "a b" (see --help)'],
      [["--addr", "0.0.0.0"], "--addr 0.0.0.0 is not loopback: the hive needs a token to bind it; give --token-file (see --help)"],
      [["--prefix", "opt/rbee"], '--prefix must be an absolute path, got "opt/rbee" (see --help)'],
      [["--user", "Root"], '--user must start with a lowercase letter or _, got "Root" (see --help)'],
      [["--purge"], "--purge goes with --uninstall (see --help)"],
      [["--uninstall", "--keep-workers"], "--keep-workers does not go with --uninstall (see --help)"],
      [["--uninstall", "--token-file", "x"], "--token-file does not go with --uninstall (see --help)"],
    ];
    for (const [args, message] of cases) {
      const r = await runInstall(host, ["--binary", release.binary, ...args]);
      expect({ args, code: r.exitCode, stderr: r.stderr, stdout: r.stdout }).toEqual({ args, code: 2, stderr: `rbee-hive install: ${message}\n`, stdout: "" });
    }
    expect(host.changes()).toEqual([]);
    expect(tree()).toEqual([]);

    const help = await runInstall(host, ["--help"]);
    expect(help.exitCode).toBe(0);
    expect(help.stdout.split("\n")[0]).toBe("Usage: sh install.sh [options]          install or upgrade rbee-hive as a systemd service");
  }, 60_000);

  test("failures before any change: exit 1 with one line, nothing touched", async () => {
    const bad = join(work.path, "bad-release");
    mkdirSync(bad);
    const name = `rbee-hive-${release.target}`;
    linkSync(release.binary, join(bad, name));
    writeFileSync(join(bad, "SHA256SUMS"), `${"0".repeat(64)}  ${name}\n`);
    const unlisted = join(work.path, "unlisted");
    mkdirSync(unlisted);
    linkSync(release.binary, join(unlisted, name));
    writeFileSync(join(unlisted, "SHA256SUMS"), `${"0".repeat(64)}  rbee-hive-other\n`);
    const shortToken = join(work.path, "short.token");
    writeFileSync(shortToken, "short\n");
    const oddToken = join(work.path, "odd.token");
    writeFileSync(oddToken, "abcdefghijklmnop qrstuvwxyz\n");

    const cases: Array<[string[], string]> = [
      [["--binary", join(bad, name)], `checksum mismatch: ${bad}/${name} does not match ${bad}/SHA256SUMS (damaged or a different build); nothing was changed`],
      [["--binary", join(unlisted, name)], `${name} is not listed in ${unlisted}/SHA256SUMS`],
      [["--binary", join(work.path, "nope")], `--binary ${work.path}/nope: no such file`],
      [["--binary", release.binary, "--token-file", shortToken], "the token (from --token-file) is shorter than 16 characters"],
      [["--binary", release.binary, "--token-file", oddToken], "the token (from --token-file) may hold only letters, digits and . _ ~ + / = -"],
    ];
    for (const [args, message] of cases) {
      const r = await runInstall(host, args);
      expect({ args, code: r.exitCode, stderr: r.stderr }).toEqual({ args, code: 1, stderr: `rbee-hive install: ${message}\n` });
    }
    expect(host.changes()).toEqual([]);
    expect(tree()).toEqual([]);
  }, 60_000);

  test("a binary that does not run on this host is refused before anything else changes", async () => {
    const dir = join(work.path, "wrong-arch");
    mkdirSync(dir);
    const binary = join(dir, `rbee-hive-${real.target}`);
    writeFileSync(binary, "#!/bin/sh\necho 'cannot execute binary file: Exec format error' >&2\necho 'second line' >&2\nexit 126\n", { mode: 0o755 });
    const sha = new Bun.CryptoHasher("sha256").update(readFileSync(binary)).digest("hex");
    writeFileSync(join(dir, "SHA256SUMS"), `${sha}  rbee-hive-${real.target}\n`);
    const r = await runInstall(host, ["--binary", binary]);
    expect({ code: r.exitCode, stderr: r.stderr }).toEqual({
      code: 1,
      stderr: `rbee-hive install: ${binary} does not run on this host: cannot execute binary file: Exec format error\n`,
    });
    expect(host.changes()).toEqual([]);
    // The staged copy is gone; only the (empty) directory it was staged in remains.
    expect(tree()).toEqual(["usr/", "usr/local/", "usr/local/bin/"]);
  }, 60_000);

  test("a hive that exits at start fails the install with one line naming the journal", async () => {
    // The port is taken: the hive exits 1 ("address in use"), and whatever holds the port is not a hive.
    const squatter = Bun.serve({ hostname: "127.0.0.1", port, fetch: () => new Response("no", { status: 503 }) });
    try {
      const r = await runInstall(host, ["--binary", release.binary, "--addr", "127.0.0.1", "--port", String(port)]);
      expect({ code: r.exitCode, stderr: r.stderr }).toEqual({
        code: 1,
        stderr: "rbee-hive install: rbee-hive.service failed to start; see: journalctl -u rbee-hive.service\n",
      });
      expect(host.changes().slice(-3)).toEqual(["systemctl daemon-reload", "systemctl enable rbee-hive.service", "systemctl restart rbee-hive.service"]);
      expect(readFileSync(join(host.state, "main.exit"), "utf8")).toBe("1\n");
    } finally {
      squatter.stop(true);
    }
  }, 60_000);
});
