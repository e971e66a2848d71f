/**
 * The status page's files, embedded as text so they ship inside the compiled binary (no files to
 * install, no network): the page, its script (joined from its parts) and its stylesheet, each with a content hash that
 * serves as ETag and as the version in the asset URLs.
 */
import html from "./index.html" with { type: "text" };
import core from "./page-core.js" with { type: "text" };
import streams from "./page-streams.js" with { type: "text" };
import render from "./page-render.js" with { type: "text" };
import live from "./page-live.js" with { type: "text" };
import main from "./page-main.js" with { type: "text" };
import css from "./app.css" with { type: "text" };

export interface Asset {
  body: string;
  contentType: string;
  /** sha256 prefix of the body: the page's cache-busting query and the ETag. */
  tag: string;
  etag: string;
}

/** bun-types types an .html import as an HTML bundle; with `type: "text"` Bun hands over the text. */
function text(what: string, value: unknown): string {
  if (typeof value !== "string") throw new Error(`status page: ${what} was not embedded as text`);
  return value;
}

const tagOf = (body: string) => new Bun.CryptoHasher("sha256").update(body).digest("hex").slice(0, 16);

function asset(body: string, contentType: string): Asset {
  const tag = tagOf(body);
  return { body, contentType, tag, etag: `"${tag}"` };
}

/**
 * The page's script is one file for the browser (one request, one module scope), written in parts
 * by concern: state and helpers, API and event streams, rendering, live updates and actions,
 * logs and the session. Joined in this order.
 */
const PARTS = { core, streams, render, live, main };
export const SCRIPT = asset(
  Object.entries(PARTS)
    .map(([name, part]) => text(`page-${name}.js`, part))
    .join("\n"),
  "text/javascript; charset=utf-8",
);
export const STYLE = asset(text("app.css", css), "text/css; charset=utf-8");

/** The page, telling its script whether this hive wants a token (a caller learns that from any 401 anyway). */
export function pageFor(auth: "token" | "none"): Asset {
  const body = text("index.html", html)
    .replace("__RBEE_AUTH__", auth)
    .replace("__RBEE_JS_TAG__", SCRIPT.tag)
    .replace("__RBEE_CSS_TAG__", STYLE.tag);
  return asset(body, "text/html; charset=utf-8");
}
