/**
 * One real SSH run of README "Install on a GPU host": Debian's sshd on a loopback port with a
 * throw-away host key and client key, and the README's sh blocks run as they are written from a
 * checkout holding dist/ and packaging/install.sh. The differences from an operator's run are
 * the values of HOST, PORT and TARGET, ssh/scp wrappers that add the connection options, and the
 * environment sshd gives the session (SetEnv): a temporary root for the files (RBEE_INSTALL_ROOT),
 * stand-ins for systemctl and the user tools first on PATH (their systemctl runs the real
 * installed binary), and a TMPDIR inside the test's directory for the remote `mktemp -d`.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { freePort, pidAlive, tempDir } from "./helpers.ts";
import { buildHostRelease, createStubHost, INSTALL_SH, REPO, type Release, type StubHost } from "./fixtures/install-host.ts";

const SSHD = "/usr/sbin/sshd";
const missing = [SSHD, "/usr/bin/ssh", "/usr/bin/scp", "/usr/bin/ssh-keygen"].filter((p) => !existsSync(p));
if (missing.length) console.log(`ssh.test.ts skipped: ${missing.join(", ")} not installed (Debian: apt-get install openssh-server; .ci/run installs it)`);
else if (process.getuid?.() !== 0) {
  missing.push("root");
  console.log("ssh.test.ts skipped: sshd and install.sh run as root, and so must this test (CI does)");
}

const TOKEN = "ssh-test-token-5d1c9e0a7b3f";
const SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** The ```sh blocks of README "Install on a GPU host", in order. */
function readmeBlocks(): string[] {
  const readme = readFileSync(join(REPO, "README.md"), "utf8");
  const start = readme.indexOf("\n## Install on a GPU host\n");
  const end = readme.indexOf("\n## ", start + 1);
  expect(start).toBeGreaterThan(0);
  return [...readme.slice(start, end).matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1]!);
}

/** The block that starts with the comment line `# <name>`. */
function block(name: string): string {
  const found = readmeBlocks().filter((b) => b.startsWith(`# ${name}\n`));
  expect(found.length).toBe(1);
  return found[0]!;
}

describe.skipIf(missing.length > 0)("README install over a real ssh", () => {
  let files: ReturnType<typeof tempDir>;
  let release: Release;
  let checkout: string;
  let host: StubHost;
  let remoteTmp: string;
  let clientPath: string;
  let sshd: ReturnType<typeof Bun.spawn> | undefined;
  let createdPrivsepDir = false;
  let hivePort: number;

  beforeAll(async () => {
    files = tempDir("rbee-ssh-test-");
    checkout = join(files.path, "checkout");
    mkdirSync(join(checkout, "packaging"), { recursive: true });
    release = await buildHostRelease(join(checkout, "dist"));
    copyFileSync(INSTALL_SH, join(checkout, "packaging/install.sh"));
    writeFileSync(join(checkout, "hive.token"), `${TOKEN}\n`, { mode: 0o600 });

    // The "GPU host": its root, stubs and TMPDIR, handed to every session by sshd's SetEnv.
    host = createStubHost(join(files.path, "host"), SYSTEM_PATH);
    remoteTmp = host.env.TMPDIR!;
    const keys = join(files.path, "keys");
    mkdirSync(keys);
    for (const name of ["host_key", "client_key"]) {
      const keygen = Bun.spawnSync(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", join(keys, name)]);
      expect(keygen.exitCode).toBe(0);
    }
    copyFileSync(join(keys, "client_key.pub"), join(keys, "authorized_keys"));
    const sshPort = freePort();
    const env = Object.entries(host.env).map(([k, v]) => `${k}=${v}`);
    writeFileSync(
      join(files.path, "sshd_config"),
      [
        `Port ${sshPort}`,
        "ListenAddress 127.0.0.1",
        `HostKey ${join(keys, "host_key")}`,
        "PidFile none",
        `AuthorizedKeysFile ${join(keys, "authorized_keys")}`,
        // The keys live under /tmp (world-writable): sshd's ownership check would refuse them.
        "StrictModes no",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin prohibit-password",
        "UsePAM no",
        "PrintMotd no",
        "Subsystem sftp internal-sftp",
        `SetEnv ${env.join(" ")}`,
        "",
      ].join("\n"),
    );
    // sshd insists on its privilege separation directory, which only the service start creates.
    if (!existsSync("/run/sshd")) {
      mkdirSync("/run/sshd", { mode: 0o755 });
      createdPrivsepDir = true;
    }
    sshd = Bun.spawn([SSHD, "-D", "-e", "-f", join(files.path, "sshd_config")], { stdin: "ignore", stdout: "ignore", stderr: "pipe" });
    let log = "";
    const reader = (sshd.stderr as ReadableStream<Uint8Array>).getReader();
    const guard = setTimeout(() => sshd?.kill("SIGKILL"), 15_000); // hang guard only
    while (!log.includes(`Server listening on 127.0.0.1 port ${sshPort}.`)) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`sshd did not start:\n${log}`);
      log += new TextDecoder().decode(value);
    }
    clearTimeout(guard);
    reader.releaseLock();
    void (sshd.stderr as ReadableStream<Uint8Array>).pipeTo(new WritableStream()).catch(() => {});

    // The operator's ssh and scp, plus the connection options of this throw-away server.
    clientPath = join(files.path, "client-bin");
    mkdirSync(clientPath);
    const options = `-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o IdentitiesOnly=yes -o LogLevel=ERROR -i ${join(keys, "client_key")}`;
    writeFileSync(join(clientPath, "ssh"), `#!/bin/sh\nexec /usr/bin/ssh ${options} -p ${sshPort} "$@"\n`);
    writeFileSync(join(clientPath, "scp"), `#!/bin/sh\nexec /usr/bin/scp ${options} -P ${sshPort} "$@"\n`);
    chmodSync(join(clientPath, "ssh"), 0o755);
    chmodSync(join(clientPath, "scp"), 0o755);
    hivePort = freePort();
  }, 120_000);

  afterAll(async () => {
    host?.killAll();
    if (sshd) {
      sshd.kill("SIGTERM");
      await sshd.exited;
    }
    if (createdPrivsepDir) rmdirSync("/run/sshd");
    files?.cleanup();
  });

  /** The README's variable block with this test's values, then the named block, in sh -e. */
  async function runReadme(name: string) {
    const vars = readmeBlocks().find((b) => b.startsWith("HOST="))!;
    const ours = vars
      .replace(/^HOST=\S+/m, "HOST=root@127.0.0.1")
      .replace(/^PORT=\S+/m, `PORT=${hivePort}`)
      .replace(/^TARGET=\S+/m, `TARGET=${release.target}`);
    expect(ours.match(/^(HOST|PORT|TARGET)=\S+/gm)).toEqual(["HOST=root@127.0.0.1", `PORT=${hivePort}`, `TARGET=${release.target}`]);
    const proc = Bun.spawn(["/bin/sh", "-e", "-c", `${ours}\n${block(name)}`], {
      cwd: checkout,
      env: { PATH: `${clientPath}:${process.env.PATH}`, HOME: files.path },
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
    });
    const timer = setTimeout(() => proc.kill("SIGKILL"), 90_000); // hang guard only
    const result = { stdout: await new Response(proc.stdout).text(), stderr: await new Response(proc.stderr).text(), exitCode: await proc.exited };
    clearTimeout(timer);
    return result;
  }

  const at = (path: string) => join(host.root, path);
  const workersList = async (token?: string) =>
    (await fetch(`http://127.0.0.1:${hivePort}/v1/workers/list`, { headers: token ? { authorization: `Bearer ${token}` } : {} })).status;
  const hiveEnv = () => readFileSync(`/proc/${host.mainPid()}/environ`, "utf8").split("\0");

  test("install, upgrade keeping workers, upgrade, uninstall: the README's commands over ssh", async () => {
    // install
    const install = await runReadme("install");
    expect(install.stderr).toBe("");
    expect(install.exitCode).toBe(0);
    const out = install.stdout.split("\n");
    expect(out[0]).toMatch(new RegExp(`^checksum: rbee-hive-${release.target} matches ${remoteTmp}/tmp\\.\\w+/SHA256SUMS$`));
    expect(out).toContain(`rbee-hive installed: ${release.versionLine}, rbee-hive.service on 0.0.0.0:${hivePort}`);
    // The README's last command is the health check from the operator's side.
    const health = JSON.parse(out[out.length - 1]!);
    expect({ status: health.status, api_version: health.api_version }).toEqual({ status: "alive", api_version: "v1" });
    expect(readFileSync(at("etc/systemd/system/rbee-hive.service"), "utf8")).toBe(readFileSync(join(REPO, "packaging/rbee-hive.service"), "utf8"));
    expect(readFileSync(at("etc/rbee/hive.env"), "utf8")).toContain(`\nRBEE_ADDR=0.0.0.0:${hivePort}\nLLORCH_API_TOKEN=${TOKEN}\n`);
    expect(Bun.spawnSync(["cmp", release.binary, at("usr/local/bin/rbee-hive")]).exitCode).toBe(0);
    expect(await workersList()).toBe(401);
    expect(await workersList(TOKEN)).toBe(200);
    expect(install.stdout + install.stderr).not.toContain(TOKEN);
    expect(host.calls().join("\n")).not.toContain(TOKEN);
    // The copied files are gone from the host again (`rm -r $dir`, and the installer's own temp dir).
    expect(readdirSync(remoteTmp)).toEqual([]);

    // upgrade, keeping the workers running
    host.clearLogs();
    const keep = await runReadme("upgrade, keeping the workers running");
    expect({ code: keep.exitCode, stderr: keep.stderr }).toEqual({ code: 0, stderr: "" });
    expect(host.changes()).toEqual(["systemctl daemon-reload", "systemctl restart rbee-hive.service"]);
    expect(readFileSync(at("etc/systemd/system/rbee-hive.service.d/keep-workers.conf"), "utf8")).toBe(readFileSync(join(REPO, "packaging/keep-workers.conf"), "utf8"));
    expect(hiveEnv()).toContain("RBEE_KEEP_WORKERS_ON_EXIT=true");
    expect(await workersList(TOKEN)).toBe(200);

    // upgrade (workers stop with the hive again)
    host.clearLogs();
    const upgrade = await runReadme("upgrade");
    expect({ code: upgrade.exitCode, stderr: upgrade.stderr }).toEqual({ code: 0, stderr: "" });
    expect(host.changes()).toEqual(["systemctl daemon-reload", "systemctl restart rbee-hive.service"]);
    expect(existsSync(at("etc/systemd/system/rbee-hive.service.d"))).toBe(false);
    expect(hiveEnv()).not.toContain("RBEE_KEEP_WORKERS_ON_EXIT=true");
    expect(await workersList(TOKEN)).toBe(200);
    expect(readdirSync(remoteTmp)).toEqual([]);

    // uninstall
    const pid = host.mainPid();
    host.clearLogs();
    const uninstall = await runReadme("uninstall");
    expect({ code: uninstall.exitCode, stderr: uninstall.stderr }).toEqual({ code: 0, stderr: "" });
    expect(uninstall.stdout.split("\n").filter(Boolean)).toEqual([
      "remove /etc/systemd/system/rbee-hive.service",
      "remove /etc/rbee/hive.env",
      "remove /usr/local/bin/rbee-hive",
      "kept /var/lib/rbee-hive (models, catalog, logs) and user rbee-hive; --purge removes them",
      "rbee-hive uninstalled",
    ]);
    expect(host.changes()).toEqual([
      "systemctl stop rbee-hive.service",
      "systemctl disable rbee-hive.service",
      "systemctl daemon-reload",
      "systemctl reset-failed rbee-hive.service",
    ]);
    expect(pidAlive(pid)).toBe(false);
    for (const path of ["etc/systemd/system/rbee-hive.service", "etc/rbee", "usr/local/bin/rbee-hive"]) expect(existsSync(at(path))).toBe(false);
    expect(existsSync(at("var/lib/rbee-hive/models.db"))).toBe(true);
  }, 120_000);
});
