/**
 * `GET /v1/hive`: who this hive is (id, version, build) and since when it runs. The status page
 * shows it in its header; queen-rbee or an operator can read it the same way (Bearer).
 */
import { Elysia, t } from "elysia";
import { API_VERSION, BUILD_COMMIT, BUILD_TARGET, VERSION } from "../version.ts";
import { errorResponses, namedModels } from "./schemas.ts";

export const HiveInfo = t.Object({
  hive_id: t.String({ description: "[queen] hive_id (RBEE_HIVE_ID), else the host name" }),
  version: t.String(),
  api_version: t.String(),
  commit: t.String({ description: 'git commit of the build; "dev" when run from source' }),
  target: t.String({ description: "release target, e.g. linux-x64" }),
  started_at: t.Integer({ description: "unix ms when this hive process started serving" }),
  uptime_s: t.Number({ description: "seconds since started_at" }),
});

export interface HiveInfoDeps {
  /** This hive's id (hiveIdOf: `[queen] hive_id`, else the host name). */
  hiveId: string;
  startedAt: number;
  now: () => number;
}

export const hiveInfoController = (d: HiveInfoDeps) => {
  return new Elysia({ name: "hive.info" }).model(namedModels({ HiveInfo })).get(
    "/v1/hive",
    () => ({
      hive_id: d.hiveId,
      version: VERSION,
      api_version: API_VERSION,
      commit: BUILD_COMMIT,
      target: BUILD_TARGET,
      started_at: d.startedAt,
      uptime_s: Math.max(0, d.now() - d.startedAt) / 1000,
    }),
    {
      response: { 200: "HiveInfo", ...errorResponses },
      detail: { tags: ["hive"], summary: "This hive: id, version, build and uptime" },
    },
  );
};
