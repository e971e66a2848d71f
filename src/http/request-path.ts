/**
 * Request plumbing shared by the hooks that run before routing (auth, body limit): the path of a
 * request and a bounded read of its body. Both must agree with what the router sees.
 */

/** The path of an absolute request URL, without the query (cheaper than `new URL` per request). */
export function pathOf(request: Request): string {
  const url = request.url;
  const start = url.indexOf("/", url.indexOf("//") + 2);
  if (start === -1) return "/";
  const query = url.indexOf("?", start);
  return url.slice(start, query === -1 ? undefined : query);
}

/** The declared body length, or undefined for a chunked (or absent) body. */
export function declaredLength(request: Request): number | undefined {
  const header = request.headers.get("content-length");
  if (header === null) return undefined;
  const n = Number(header);
  return Number.isFinite(n) && n >= 0 ? n : undefined;
}

/**
 * Read at most `limit` bytes of a body without consuming the request (a clone is read; the
 * original keeps its bytes for the parser). Returns null when the body is larger than `limit`.
 */
export async function readBounded(request: Request, limit: number): Promise<Uint8Array | null> {
  const declared = declaredLength(request);
  if (declared !== undefined && declared > limit) return null;
  if (!request.body) return new Uint8Array();
  const reader = request.clone().body!.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      void reader.cancel().catch(() => {});
      return null;
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks);
}
