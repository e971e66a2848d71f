/**
 * The route template a request path matched (`/v1/workers/:id`), for metrics labels: a raw path
 * carries worker ids, download ids, proxied paths, so it would make the label set unbounded.
 * Paths no route serves are all `unmatched`.
 */
export const UNMATCHED_ROUTE = "unmatched";

export interface RouteLike {
  method: string;
  path: string;
}

/** A matcher over the app's routes: static paths by lookup, templates by anchored patterns (most literal first). */
export function routeTemplateMatcher(routes: readonly RouteLike[]): (method: string, path: string) => string {
  const statics = new Map<string, string>();
  const dynamic: Array<{ method: string; template: string; pattern: RegExp; literal: number }> = [];
  for (const r of routes) {
    if (!/[:*]/.test(r.path)) {
      statics.set(`${r.method} ${r.path}`, r.path);
      continue;
    }
    const source = r.path
      .split("/")
      .map((seg) => (seg === "*" ? ".*" : seg.startsWith(":") ? "[^/]+" : seg.replace(/[.+?^${}()|[\]\\]/g, "\\$&")))
      .join("/");
    dynamic.push({ method: r.method, template: r.path, pattern: new RegExp(`^${source}$`), literal: r.path.replace(/:[^/]+|\*/g, "").length });
  }
  dynamic.sort((a, b) => b.literal - a.literal);
  const find = (method: string, path: string): string | undefined =>
    statics.get(`${method} ${path}`) ?? dynamic.find((d) => d.method === method && d.pattern.test(path))?.template;
  // HEAD is answered by GET routes.
  return (method, path) => find(method, path) ?? (method === "HEAD" ? find("GET", path) : undefined) ?? UNMATCHED_ROUTE;
}
