/**
 * Verifying a blob: which hash (sha256 for LFS files, git blob sha1 otherwise), hashing a whole
 * file, and hashing a file in order while its parts are still being written out of order.
 */
import { createHash, type Hash } from "node:crypto";
import { closeSync, openSync } from "node:fs";
import { HiveError } from "../../../shared/errors.ts";
import type { RemoteFile } from "../hub-client.ts";
import { abortError } from "../retry.ts";
import { readAt } from "./fd-io.ts";
import { writtenPrefix, type PartState } from "./partial-state.ts";

/** Read size when hashing from disk. */
const HASH_READ_BYTES = 8 << 20;

export type DigestAlgo = "sha256" | "git-sha1";

/** Which hash verifies a file, and its expected hex digest. */
export function expectedDigest(file: RemoteFile): { algo: DigestAlgo; hex: string } {
  if (file.sha256) return { algo: "sha256", hex: file.sha256 };
  if (file.gitOid) return { algo: "git-sha1", hex: file.gitOid };
  throw new HiveError(502, "HUB_BAD_RESPONSE", `no checksum known for ${file.path}`);
}

function newHasher(algo: DigestAlgo, size: number): Hash {
  if (algo === "sha256") return createHash("sha256");
  const h = createHash("sha1");
  h.update(`blob ${size}\0`);
  return h;
}

/** Hash a complete file on disk (used for blobs found in the cache). */
export async function hashFile(
  path: string,
  file: RemoteFile,
  signal?: AbortSignal,
  onBytes?: (n: number) => void,
): Promise<string> {
  const { algo } = expectedDigest(file);
  const h = newHasher(algo, file.size);
  const fd = openSync(path, "r");
  const buf = new Uint8Array(HASH_READ_BYTES);
  try {
    let pos = 0;
    for (;;) {
      if (signal?.aborted) throw abortError(signal);
      const n = await readAt(fd, buf, 0, buf.length, pos);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
      pos += n;
      onBytes?.(n);
    }
  } finally {
    closeSync(fd);
  }
  return h.digest("hex");
}

/**
 * Hashes the file in order on the event loop while parts are written out of order: bytes that
 * arrive in order straight from memory, the rest (other connections, a resumed file) read back
 * from the page cache once the written prefix reaches them.
 */
export class OrderedHasher {
  private hashed = 0;
  private busy: Promise<void> | null = null;
  private readonly h: Hash;
  private buf: Uint8Array | null = null;
  private failure: unknown = null;

  constructor(
    algo: DigestAlgo,
    private readonly fd: number,
    private readonly size: number,
    private readonly parts: PartState[],
  ) {
    this.h = newHasher(algo, size);
  }

  private prefix(): number {
    return writtenPrefix(this.parts, this.size);
  }

  /** A chunk was written at `pos` (the write completed). */
  onWrite(pos: number, chunk: Uint8Array): void {
    if (this.busy === null && pos === this.hashed) {
      this.h.update(chunk);
      this.hashed += chunk.length;
      return;
    }
    this.kick();
  }

  /** Catch up with what is on disk, in the background. */
  kick(): void {
    if (this.busy !== null || this.failure !== null) return;
    if (this.prefix() <= this.hashed) return;
    this.busy = this.catchUp()
      .catch((e) => {
        this.failure = e;
      })
      .finally(() => {
        this.busy = null;
      });
  }

  private async catchUp(): Promise<void> {
    for (let end = this.prefix(); end > this.hashed; end = this.prefix()) {
      const buf = (this.buf ??= new Uint8Array(HASH_READ_BYTES));
      const n = Math.min(end - this.hashed, buf.length);
      const got = await readAt(this.fd, buf, 0, n, this.hashed);
      if (got <= 0) throw new Error(`short read at ${this.hashed}`);
      this.h.update(buf.subarray(0, got));
      this.hashed += got;
    }
  }

  /** Resolves when no read is in flight (before the fd is closed). */
  async idle(): Promise<void> {
    while (this.busy) await this.busy;
  }

  /** Call when every part is complete: hashes what is left and returns the hex digest. */
  async finish(): Promise<string> {
    for (;;) {
      if (this.busy) await this.busy;
      if (this.failure) throw this.failure;
      if (this.hashed >= this.size) return this.h.digest("hex");
      this.kick();
      if (!this.busy) throw new Error("hasher cannot make progress");
    }
  }
}
