/**
 * Opening the catalog at start-up. A models.db that is not a database, or fails
 * `PRAGMA quick_check`, is moved aside (with its -wal and -shm) to `models.db.corrupt-<unix ms>`
 * and a fresh catalog is created and rebuilt from the models on disk: a damaged index must not
 * keep the hive from serving, and the operator keeps the old file to look at. Any other failure to
 * open (permissions, I/O) is thrown to the caller, which refuses to start.
 */
import type { Clock } from "../../shared/clock.ts";
import { systemClock } from "../../shared/clock.ts";
import type { Logger } from "../../shared/logger.ts";
import { existingSuffixes, findDamage, moveAside } from "../../shared/sqlite-damage.ts";
import { ModelCatalog } from "./catalog.ts";


export interface OpenCatalogOptions {
  path: string;
  /** Where the models live (named in the log line about a rebuild). */
  modelsDir: string;
  clock?: Clock;
  logger: Logger;
  /** Re-register what is on disk into a fresh catalog; returns the refs registered. */
  rebuild: (catalog: ModelCatalog) => string[];
}

export function openCatalog(o: OpenCatalogOptions): ModelCatalog {
  const clock = o.clock ?? systemClock;
  const existed = existingSuffixes(o.path);
  const damage = findDamage(o.path);
  if (damage === null) return new ModelCatalog({ path: o.path, clock, logger: o.logger });
  const movedTo = moveAside(o.path, clock.now(), existed);
  const catalog = new ModelCatalog({ path: o.path, clock, logger: o.logger });
  const rebuilt = o.rebuild(catalog);
  o.logger.warn(`model catalog ${o.path} is damaged; moved it to ${movedTo} and rebuilt the catalog from ${o.modelsDir}`, {
    damage,
    rebuilt,
  });
  return catalog;
}
