/**
 * The short chaos soak of CI: 50 rounds of random faults (fixed seed, so a failure replays with
 * `bun run soak --seed <seed> --rounds 50`) against a real hive with workers and downloads; every
 * round ends with the invariants of test/soak/soak.ts and must break none of them.
 */
import { expect, test } from "bun:test";
import { FAULTS, runSoak } from "./soak.ts";

const SEED = Number(process.env.SOAK_SEED ?? 424242);
const ROUNDS = Number(process.env.SOAK_ROUNDS ?? 50);

test(`chaos soak: ${ROUNDS} rounds of random faults, 0 violations (seed ${SEED})`, async () => {
  const report = await runSoak({ rounds: ROUNDS, seed: SEED, say: (s) => console.log(`[soak] ${s}`) });
  console.log(`soak: ${report.rounds} rounds in ${report.seconds} s, faults ${JSON.stringify(report.faults)}, ${report.violations.length} violations${report.artifacts ? `, logs in ${report.artifacts}` : ""}`);
  expect(report.violations).toEqual([]);
  expect(report.rounds).toBe(ROUNDS);
  // Every kind of fault ran at least once (disk_full needs root for its tmpfs: skipped with the reason otherwise).
  const ran = FAULTS.filter((f) => (report.faults[f] ?? 0) > 0 || (f === "disk_full" && report.skipped.disk_full?.startsWith("skipped:")));
  expect(ran).toEqual([...FAULTS]);
}, 300_000);
