/**
 * Which connection (stream) owns which Range part. A stream requests its part and the run of
 * untouched, unclaimed parts after it in one request, and claims each of those as it reaches it,
 * so one stream reads the file in order (hashed from memory); a stream added later starts in the
 * middle of the largest run another stream is heading into.
 */
import { partLen, type PartState } from "./partial-state.ts";

export class PartClaims {
  private readonly claimed: boolean[];

  constructor(private readonly parts: PartState[]) {
    this.claimed = new Array<boolean>(parts.length).fill(false);
  }

  complete(i: number): boolean {
    return this.parts[i]!.done >= partLen(this.parts[i]!);
  }

  isClaimed(i: number): boolean {
    return this.claimed[i]!;
  }

  claim(i: number): void {
    this.claimed[i] = true;
  }

  /** Index of the first part not complete, or -1. */
  firstIncomplete(): number {
    for (let i = 0; i < this.parts.length; i++) if (!this.complete(i)) return i;
    return -1;
  }

  /** The last part a request from part `i` covers: the untouched, unclaimed parts after it. */
  runEnd(i: number): number {
    let last = i;
    while (last + 1 < this.parts.length && !this.claimed[last + 1] && this.parts[last + 1]!.done === 0) last++;
    return last;
  }

  /** Where a stream should start: the first run no stream is heading into, else the middle of the largest run; -1 when none. */
  pick(): number {
    const n = this.parts.length;
    let split = -1;
    let splitLen = 0;
    for (let i = 0; i < n; ) {
      if (!this.free(i)) {
        i++;
        continue;
      }
      let j = i + 1;
      while (j < n && this.free(j) && this.parts[j]!.done === 0) j++;
      const fed = this.parts[i]!.done === 0 && i > 0 && this.claimed[i - 1] && !this.complete(i - 1);
      if (!fed) return i;
      if (j - i > splitLen) {
        splitLen = j - i;
        split = i + ((j - i) >> 1);
      }
      i = j;
    }
    return split;
  }

  private free(i: number): boolean {
    return !this.claimed[i] && !this.complete(i);
  }
}
