/**
 * The group guardian: one small helper process per hive process that kills every registered
 * process group (SIGKILL) the moment the hive is gone, whatever ended it (SIGKILL, OOM killer, a
 * crash), so a worker's grandchildren die with it too. The kernel's parent-death signal reaches
 * only the worker itself (parent-death.ts).
 *
 * How it knows: the hive holds the write end of the guardian's stdin. The kernel closes it when
 * the hive dies, the guardian reads EOF, kills the groups it was told about and exits. On a clean
 * exit every worker is stopped first and unregistered, so EOF finds nothing to kill. The pipe's
 * write end is close-on-exec, so no worker inherits it and keeps it open.
 *
 * Protocol on stdin, one line each: `+<pgid> <leader start time>` and `-<pgid>`. A group whose
 * leader pid now belongs to another process (different start time) is never signalled.
 *
 * The helper is the hive's own executable: the compiled binary re-executes itself with
 * GUARDIAN_ENV=1 (main.ts checks it first; not a user-facing command), the source tree runs
 * group-guardian-main.ts with the same Bun. It ignores SIGINT/SIGHUP/SIGTERM (a Ctrl-C or a
 * `pkill rbee-hive` must not end it early; only EOF does) and lives in its own session.
 */
import { join } from "node:path";
import { identify } from "./proc-stat.ts";
import { LineSplitter } from "./child-output.ts";

export const GUARDIAN_ENV = "RBEE_INTERNAL_GROUP_GUARDIAN";

// ---------------------------------------------------------------------------------------------
// Inside the guardian process

/** The guardian's main loop: read registrations until EOF, then kill what is registered. */
export async function runGuardian(): Promise<never> {
  for (const sig of ["SIGINT", "SIGHUP", "SIGTERM"] as const) process.on(sig, () => {});
  const groups = new Map<number, string | null>();
  const apply = (line: string) => {
    const m = /^([+-])(\d+)(?: (\d+|-))?$/.exec(line.trim());
    if (!m) return;
    const pgid = Number(m[2]);
    if (m[1] === "+") groups.set(pgid, m[3] && m[3] !== "-" ? m[3] : null);
    else groups.delete(pgid);
  };
  const lines = new LineSplitter(apply);
  try {
    for await (const chunk of Bun.stdin.stream() as unknown as AsyncIterable<Uint8Array>) lines.push(chunk);
  } catch {
    // a read error means the hive is gone as surely as EOF does
  }
  lines.end();
  killGroups(groups);
  process.exit(0);
}

function killGroups(groups: Map<number, string | null>): void {
  for (const [pgid, startTime] of groups) {
    if (pgid <= 1) continue;
    if (startTime !== null && identify(pgid, startTime) === "other") continue; // pid reused: not ours
    try {
      process.kill(-pgid, "SIGKILL");
    } catch {
      // group already empty
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Inside the hive

/** Running from `bun build --compile`: modules live under /$bunfs (B:/~BUN on Windows). */
const compiled = import.meta.path.startsWith("/$bunfs/") || import.meta.path.includes("~BUN");

function guardianCommand(): string[] {
  return compiled ? [process.execPath] : [process.execPath, join(import.meta.dir, "group-guardian-main.ts")];
}

type GuardianProcess = Bun.Subprocess<"pipe", "ignore", "inherit">;

export class GroupGuardian {
  private proc: GuardianProcess | null = null;
  private readonly groups = new Map<number, string | null>();

  /** Kill this group when the hive dies. `startTime` is the leader's (proc-stat.ts), if known. */
  add(pgid: number, startTime: string | null): void {
    this.groups.set(pgid, startTime);
    this.send(`+${pgid} ${startTime ?? "-"}\n`);
  }

  /** The group is gone (or deliberately left running): forget it. */
  remove(pgid: number): void {
    if (this.groups.delete(pgid)) this.send(`-${pgid}\n`);
  }

  private send(line: string): void {
    const proc = this.proc ?? this.start();
    if (!proc) return;
    try {
      proc.stdin.write(line);
      void Promise.resolve(proc.stdin.flush()).catch(() => {});
    } catch {
      // it died; onExit starts another with the whole table
    }
  }

  private start(): GuardianProcess | null {
    try {
      const proc: GuardianProcess = Bun.spawn(guardianCommand(), {
        stdin: "pipe",
        stdout: "ignore",
        stderr: "inherit",
        detached: true, // own session: a terminal's Ctrl-C goes to the hive's group, not here
        env: { ...process.env, [GUARDIAN_ENV]: "1" },
        onExit: (): void => this.onExit(proc),
      });
      proc.unref(); // never what keeps the hive (or a test run) alive
      (proc.stdin as unknown as { unref?: () => void }).unref?.();
      this.proc = proc;
      for (const [pgid, startTime] of this.groups) proc.stdin.write(`+${pgid} ${startTime ?? "-"}\n`);
      return proc;
    } catch {
      return null; // cannot start it: the parent-death signal and the next start's cleanup remain
    }
  }

  private onExit(proc: GuardianProcess): void {
    if (this.proc !== proc) return;
    this.proc = null;
    // Killed by someone while the hive lives: start another at once with the whole table.
    if (this.groups.size > 0) this.start();
  }
}

/** One guardian per hive process (several in-process hives in a test share it). */
export const groupGuardian = new GroupGuardian();
