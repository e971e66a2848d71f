/**
 * What the answer to a ranged request must look like before any of its bytes is written: served
 * from the planned commit, with the tree's size and sha256, starting at the byte asked for.
 */
import { HiveError } from "../../../shared/errors.ts";
import type { OpenedFile, RemoteFile } from "../hub-client.ts";
import { TransientError } from "../retry.ts";

const SHA256 = /^[0-9a-f]{64}$/;
const CONTENT_RANGE = /^bytes (\d+)-(\d+)\/(\d+|\*)$/;

/** The body of the answer for bytes `from`-`to`; throws TransientError (retry) or HiveError (final). */
export async function checkedBody(opened: OpenedFile, file: RemoteFile, commit: string, from: number, to: number): Promise<ReadableStream<Uint8Array>> {
  checkHubHeaders(opened.hub, file, commit);
  const res = opened.response;
  if (res.status === 206) {
    const m = CONTENT_RANGE.exec(res.headers.get("content-range") ?? "");
    if (!m || Number(m[1]) !== from) {
      await discard(res);
      throw new TransientError(`unexpected Content-Range "${res.headers.get("content-range")}" for bytes=${from}-${to}`);
    }
  } else if (res.status === 200) {
    if (from !== 0) {
      await discard(res);
      throw new HiveError(502, "HUB_BAD_RESPONSE", `file host ignored Range for ${file.path}`);
    }
  } else {
    await discard(res);
    throw new TransientError(`unexpected status ${res.status}`, undefined, res.status);
  }
  if (!res.body) throw new TransientError("response without body");
  return res.body;
}

function checkHubHeaders(h: OpenedFile["hub"], file: RemoteFile, commit: string): void {
  if (h.repoCommit && h.repoCommit !== commit) {
    throw new HiveError(502, "HUB_BAD_RESPONSE", `hub served ${file.path} from commit ${h.repoCommit}, expected ${commit}`);
  }
  if (file.sha256 && h.linkedEtag && SHA256.test(h.linkedEtag) && h.linkedEtag !== file.sha256) {
    throw new HiveError(502, "HUB_BAD_RESPONSE", `hub's X-Linked-Etag for ${file.path} (${h.linkedEtag}) differs from the tree (${file.sha256})`);
  }
  if (h.linkedSize !== null && h.linkedSize !== file.size) {
    throw new HiveError(502, "HUB_BAD_RESPONSE", `hub's X-Linked-Size for ${file.path} (${h.linkedSize}) differs from the tree (${file.size})`);
  }
}

async function discard(res: Response): Promise<void> {
  await res.body?.cancel().catch(() => {});
}
