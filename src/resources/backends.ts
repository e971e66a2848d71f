/**
 * Which backends this host can run: `cpu` always; `cuda`, `rocm`, `metal` when their devices
 * exist. Each says which worker profiles declare it and whether one of their binaries is installed.
 */
import { dirname } from "node:path";
import { resolveProfile, type HiveConfig } from "../config.ts";
import { t, type Static } from "../shared/schema.ts";
import { binaryFor } from "../workers/worker-binary.ts";
import type { HostSnapshot } from "./types.ts";

export const KNOWN_BACKENDS = ["cpu", "cuda", "rocm", "metal"] as const;

export const BackendInfo = t.Object({
  name: t.String(),
  available: t.Boolean({ description: "the host has devices for it (cpu: always)" }),
  devices: t.Array(t.String(), { description: 'device ids, e.g. ["gpu0","gpu1"] or ["cpu"]' }),
  profiles: t.Array(t.String(), { description: "worker profiles that declare this backend" }),
  binary_installed: t.Boolean({ description: "one of those profiles' worker binary is found" }),
  reason: t.Union([t.String(), t.Null()], { description: "why it is not available" }),
});
export type BackendInfo = Static<typeof BackendInfo>;

export interface ProfileSupport {
  name: string;
  backends: string[];
  binaryInstalled: boolean;
}

/** Devices per backend in the snapshot. */
export function devicesByBackend(snapshot: HostSnapshot): Map<string, string[]> {
  const map = new Map<string, string[]>([["cpu", ["cpu"]]]);
  for (const g of snapshot.gpus) map.set(g.backend, [...(map.get(g.backend) ?? []), g.id]);
  return map;
}

export function describeBackends(snapshot: HostSnapshot, profiles: ProfileSupport[]): BackendInfo[] {
  const devices = devicesByBackend(snapshot);
  const names = [...KNOWN_BACKENDS, ...new Set(profiles.flatMap((p) => p.backends).filter((b) => !(KNOWN_BACKENDS as readonly string[]).includes(b)))];
  const vendorOf: Record<string, keyof HostSnapshot["detection"]> = { cuda: "nvidia", rocm: "rocm", metal: "apple" };
  return names.map((name) => {
    const ids = devices.get(name) ?? [];
    const declaring = profiles.filter((p) => p.backends.includes(name));
    const vendor = vendorOf[name];
    const why = ids.length
      ? null
      : vendor
        ? `no ${name} devices: ${snapshot.detection[vendor].reason ?? snapshot.detection[vendor].status}`
        : `the hive does not detect ${name} devices`;
    return { name, available: ids.length > 0, devices: ids, profiles: declaring.map((p) => p.name), binary_installed: declaring.some((p) => p.binaryInstalled), reason: why };
  });
}

/** The configured profiles (the built-in one included) and whether each one's binary is found. */
export function profileSupport(config: HiveConfig, execDir = dirname(process.execPath)): ProfileSupport[] {
  const names = [...new Set([config.workers.default_profile, "llm-worker-rbee", ...Object.keys(config.workers.profiles)])];
  return names.flatMap((name) => {
    const profile = resolveProfile(config, name);
    if (!profile) return [];
    let installed = true;
    try {
      binaryFor(config, name, profile, execDir);
    } catch {
      installed = false;
    }
    return [{ name, backends: profile.backends, binaryInstalled: installed }];
  });
}
