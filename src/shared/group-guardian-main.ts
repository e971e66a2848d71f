/** Entry of the group guardian when the hive runs from source (group-guardian.ts). */
import { runGuardian } from "./group-guardian.ts";

await runGuardian();
