/**
 * `GET /`: the operator's status page, with its script and stylesheet under `/ui/`. All three are
 * public (the page asks for the token and sends it as Bearer from then on), embedded in the binary,
 * revalidated by ETag, and sent with a strict Content-Security-Policy: same-origin script, style
 * and fetch only, nothing inline, no framing.
 */
import { Elysia } from "elysia";
import { SCRIPT, STYLE, pageFor, type Asset } from "./status-page/assets.ts";

export const STATUS_PAGE_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** The page's own paths; the auth middleware lets exactly these through without a token. */
export const STATUS_PAGE_PATHS = ["/", "/ui/app.js", "/ui/app.css"] as const;

function serveAsset(asset: Asset, request: Request): Response {
  const headers = {
    etag: asset.etag,
    // Revalidate every time (a 304 is a few bytes): an upgraded hive serves its new page at once.
    "cache-control": "no-cache",
    "content-security-policy": STATUS_PAGE_CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
  };
  const match = request.headers.get("if-none-match");
  if (match && match.split(",").some((tag) => tag.trim() === asset.etag)) return new Response(null, { status: 304, headers });
  return new Response(asset.body, { headers: { ...headers, "content-type": asset.contentType } });
}

/** Not API: kept out of the OpenAPI document. */
const hidden = { detail: { hide: true } };

export const statusPageController = (opts: { tokenRequired: boolean }) => {
  const page = pageFor(opts.tokenRequired ? "token" : "none");
  return new Elysia({ name: "hive.status-page" })
    .get("/", ({ request }) => serveAsset(page, request), hidden)
    .get("/ui/app.js", ({ request }) => serveAsset(SCRIPT, request), hidden)
    .get("/ui/app.css", ({ request }) => serveAsset(STYLE, request), hidden);
};
