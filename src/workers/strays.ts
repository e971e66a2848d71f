/**
 * Worker processes of this data dir that no saved state names: strays. A worker's stdout and
 * stderr are its log file `<data_dir>/logs/<id>.log` (worker-launcher.ts), so a process whose fd 1
 * and fd 2 are both a file in this hive's logs dir is a worker some hive with this data dir
 * started. At start-up every such process that the saved state does not account for (it was never
 * saved because the disk was full, or state.db was damaged and moved aside) would run on with
 * nothing to monitor, stop or adopt it, holding its memory and port: the hive stops it (process
 * group SIGTERM, `stop_grace_s`, SIGKILL) and says so. Only one hive runs per data dir (state.db is
 * locked), so no other hive's live worker can be taken for a stray. Linux only (/proc); elsewhere
 * there is nothing to find.
 */
import { readlinkSync } from "node:fs";
import type { Logger } from "../shared/logger.ts";
import { groupMembers, identify, procPids, readProcStat } from "../shared/proc-stat.ts";
import { signalGroup } from "../shared/process-tools.ts";

export interface Stray {
  pid: number;
  pgid: number;
  startTime: string;
  logFile: string;
}

/** Processes writing to a log file in `logsDir` whose pid and process group are not in `known`. */
export function findStrays(logsDir: string, known: { pids: Set<number>; pgids: Set<number> }): Stray[] {
  const prefix = logsDir.endsWith("/") ? logsDir : `${logsDir}/`;
  const out: Stray[] = [];
  for (const pid of procPids()) {
    if (pid === process.pid || known.pids.has(pid)) continue;
    let out1: string;
    let out2: string;
    try {
      out1 = readlinkSync(`/proc/${pid}/fd/1`);
      out2 = readlinkSync(`/proc/${pid}/fd/2`);
    } catch {
      continue; // not ours to read, or gone
    }
    if (out1 !== out2 || !out1.startsWith(prefix)) continue;
    const st = readProcStat(pid);
    if (!st || known.pgids.has(st.pgrp) || st.state === "Z") continue;
    out.push({ pid, pgid: st.pgrp, startTime: st.startTime, logFile: out1 });
  }
  // One per process group (a worker's children inherit its output): the group leader when seen.
  const byGroup = new Map<number, Stray>();
  for (const s of out) if (!byGroup.has(s.pgid) || s.pid === s.pgid) byGroup.set(s.pgid, s);
  return [...byGroup.values()];
}

/** Stop every stray (group SIGTERM, `graceMs`, SIGKILL of what is left); resolves once they are gone. */
export async function stopStrays(strays: Stray[], graceMs: number, logger: Logger, sleep = (ms: number) => Bun.sleep(ms)): Promise<void> {
  await Promise.all(
    strays.map(async (s) => {
      logger.warn("stray worker process stopped", {
        pid: s.pid,
        log_file: s.logFile,
        why: "it writes to this data dir's worker logs but no saved state names it (state not saved, or state.db damaged)",
      });
      const same = () => identify(s.pid, s.startTime) === "same";
      signalGroup(s.pgid, "SIGTERM", () => same() && (process.kill(s.pid, "SIGTERM"), true));
      for (let waited = 0; waited < graceMs && groupMembers(s.pgid).length > 0; waited += 25) await sleep(25);
      if (groupMembers(s.pgid).length > 0) signalGroup(s.pgid, "SIGKILL", () => same() && (process.kill(s.pid, "SIGKILL"), true));
    }),
  );
}
