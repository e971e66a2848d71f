/**
 * What Linux says about a process in `/proc/<pid>/stat`: its state, parent, process group and
 * start time. The start time (field 22, clock ticks since boot) never changes for a process, exec
 * included, and differs for a later process that got the same pid: pid + start time names one
 * process for good, which is how the hive tells its own worker from a stranger that reused the pid.
 * Everything answers "unknown" (null) where /proc is missing (macOS).
 */
import { readdirSync, readFileSync } from "node:fs";

export interface ProcStat {
  pid: number;
  /** R, S, D, Z (zombie), T, X, … */
  state: string;
  ppid: number;
  pgrp: number;
  /** Field 22 as written (clock ticks since boot; kept as text, it can exceed 2^53 in theory). */
  startTime: string;
}

/** Parse one `/proc/<pid>/stat` line; the command name may hold spaces and parentheses. */
export function parseProcStat(text: string): ProcStat | null {
  const close = text.lastIndexOf(")");
  const open = text.indexOf("(");
  if (close < 0 || open < 0) return null;
  // After ") ": state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime
  // cutime cstime priority nice num_threads itrealvalue starttime (field 22 = index 19 here).
  const rest = text.slice(close + 2).split(" ");
  const pid = Number(text.slice(0, open).trim());
  const startTime = rest[19];
  if (!Number.isInteger(pid) || rest.length < 20 || !startTime || !/^\d+$/.test(startTime)) return null;
  return { pid, state: rest[0]!, ppid: Number(rest[1]), pgrp: Number(rest[2]), startTime };
}

/** The process's stat, or null when it does not exist (or /proc is not there). */
export function readProcStat(pid: number): ProcStat | null {
  if (!Number.isInteger(pid) || pid <= 0) return null;
  try {
    return parseProcStat(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return null;
  }
}

/** A zombie (exited, not yet reaped) or dead task counts as gone: it holds no memory, no port. */
export const isLiveState = (state: string): boolean => state !== "Z" && state !== "X" && state !== "x";

export type ProcessIdentity = "same" | "gone" | "other";

/**
 * Is the process with this pid still the one that had `startTime`? "other": the pid now belongs to
 * an unrelated process (never signal it); "gone": no live process has the pid.
 */
export function identify(pid: number, startTime: string): ProcessIdentity {
  const st = readProcStat(pid);
  if (!st || !isLiveState(st.state)) return "gone";
  return st.startTime === startTime ? "same" : "other";
}

/** Every pid in /proc (empty where /proc is missing). */
export function procPids(): number[] {
  let entries: string[];
  try {
    entries = readdirSync("/proc");
  } catch {
    return [];
  }
  return entries.filter((e) => e.charCodeAt(0) >= 48 && e.charCodeAt(0) <= 57).map(Number);
}

/** Live members of a process group, from a scan of /proc (empty where /proc is missing). */
export function groupMembers(pgid: number): ProcStat[] {
  const out: ProcStat[] = [];
  for (const pid of procPids()) {
    const st = readProcStat(pid);
    if (st && st.pgrp === pgid && isLiveState(st.state)) out.push(st);
  }
  return out;
}

/** Start times compare as numbers (clock ticks since boot). */
export const startedNoEarlier = (a: string, b: string): boolean => BigInt(a) >= BigInt(b);
