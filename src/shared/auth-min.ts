/**
 * auth-min: Bearer parsing, constant-time token compare, token fingerprints and the bind policy.
 * Mirrors the upstream crate: the two 401 bodies are part of the wire contract.
 */
import { createHash, timingSafeEqual } from "node:crypto";

export const MIN_TOKEN_LENGTH = 16;
/** Longer Authorization headers are rejected before any hashing (cheap DoS guard). */
export const MAX_AUTH_HEADER_LENGTH = 4096;

export const MISSING_API_KEY = { code: "MISSING_API_KEY", message: "Missing API key" } as const;
export const INVALID_API_KEY = { code: "INVALID_API_KEY", message: "Invalid or missing API key" } as const;

export type BearerParse = { ok: true; token: string } | { ok: false };

/** `Bearer <token>`: the prefix is case-sensitive, the token non-empty, the header bounded. */
export function parseBearer(header: string | null | undefined): BearerParse {
  if (!header || header.length > MAX_AUTH_HEADER_LENGTH) return { ok: false };
  if (!header.startsWith("Bearer ")) return { ok: false };
  const token = header.slice("Bearer ".length).trim();
  return token.length > 0 ? { ok: true, token } : { ok: false };
}

const sha256 = (s: string) => createHash("sha256").update(s, "utf8").digest();
/** `token:<first 6 hex of the sha256>`, from the digest. */
const fingerprintOf = (digest: Buffer) => `token:${digest.toString("hex", 0, 3)}`;

/** Constant-time compare: both sides hashed to 32 bytes first, so length differences leak nothing. */
export function tokensEqual(presented: string, expected: string): boolean {
  return timingSafeEqual(sha256(presented), sha256(expected));
}

/** How logs name a token: `token:<first 6 hex of sha256>`. Never log the token itself. */
export function tokenFingerprint(token: string): string {
  return fingerprintOf(sha256(token));
}

export type AuthOutcome =
  | { ok: true; fingerprint: string }
  | { ok: false; error: typeof MISSING_API_KEY | typeof INVALID_API_KEY; fingerprint?: string };

/** The configured token's digest, computed once: every request is checked against it. */
let expectedDigest: { token: string; digest: Buffer } | null = null;
const digestOfExpected = (expected: string) =>
  expectedDigest?.token === expected ? expectedDigest.digest : (expectedDigest = { token: expected, digest: sha256(expected) }).digest;

/**
 * Check an Authorization header against the configured token. One sha256 per request (it is on
 * the path of every proxied request): the presented token's digest serves the constant-time compare
 * and its fingerprint alike.
 */
export function checkBearer(header: string | null | undefined, expected: string): AuthOutcome {
  const parsed = parseBearer(header);
  if (!parsed.ok) return { ok: false, error: MISSING_API_KEY };
  const presented = sha256(parsed.token);
  const fingerprint = fingerprintOf(presented);
  return timingSafeEqual(presented, digestOfExpected(expected)) ? { ok: true, fingerprint } : { ok: false, error: INVALID_API_KEY, fingerprint };
}

/** Loopback hosts may run without a token. */
export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, "").toLowerCase();
  return h === "localhost" || h === "::1" || /^127\.\d+\.\d+\.\d+$/.test(h);
}

/**
 * Bind policy: a non-loopback bind needs a token of at least 16 characters.
 * Returns null when allowed, else the reason to refuse to start.
 */
export function bindPolicyViolation(host: string, token: string | undefined): string | null {
  if (isLoopbackHost(host)) return null;
  if (!token) {
    return `refusing to bind ${host}: a non-loopback address needs LLORCH_API_TOKEN (at least ${MIN_TOKEN_LENGTH} characters); bind 127.0.0.1 or set a token`;
  }
  if (token.length < MIN_TOKEN_LENGTH) {
    return `refusing to bind ${host}: LLORCH_API_TOKEN is ${token.length} characters, at least ${MIN_TOKEN_LENGTH} are required for a non-loopback bind`;
  }
  return null;
}
