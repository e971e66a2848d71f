/**
 * "Die with me" for child processes, on Linux, in two layers (workers/README "Exit policies"):
 *
 * 1. The child itself: util-linux `setpriv --pdeathsig KILL -- <argv>` sets PR_SET_PDEATHSIG and
 *    execs the real program (same pid). Bun.spawn has no pre-exec hook, so this is the way to set
 *    it without a shell or native code. The kernel sends the signal when the THREAD that forked
 *    the child exits; Bun forks from the JavaScript thread, which lives as long as the hive
 *    (test/survive.test.ts proves it after 100 spawns). It reaches only that one process.
 * 2. Its whole process group: the group guardian (group-guardian.ts), one small process per hive
 *    process that SIGKILLs every registered group the moment the hive's end of a pipe closes.
 *
 * Where setpriv (or its --pdeathsig, util-linux ≥ 2.33) is missing, layer 1 is skipped; the
 * guardian still kills the groups, and the next hive kills what is left from its records.
 */

let cached: string[] | null = null;

/** The argv prefix (`setpriv --pdeathsig KILL --`), or [] where that is not available. */
export function parentDeathPrefix(): string[] {
  if (cached) return cached;
  cached = [];
  if (process.platform !== "linux") return cached;
  const setpriv = Bun.which("setpriv");
  if (!setpriv) return cached;
  try {
    const help = Bun.spawnSync([setpriv, "--help"], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
    if (help.stdout.toString().includes("--pdeathsig")) cached = [setpriv, "--pdeathsig", "KILL", "--"];
  } catch {
    // not runnable: layer 1 is skipped
  }
  return cached;
}
