/**
 * A child's output, line by line: a bounded ring of the last lines, an append-only log file, and
 * the pump that splits a byte stream into lines. Used by the supervisor (daemon-lifecycle.ts).
 */
import { closeSync, mkdirSync, openSync } from "node:fs";
import { dirname } from "node:path";

export type OutputStream = "stdout" | "stderr";

/** A "line" longer than this (no newline in sight) is cut into pieces to bound memory. */
export const MAX_LINE_CHARS = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Ring buffer of tagged lines

interface TaggedLine {
  stream: OutputStream;
  line: string;
}

export class LineRing {
  private readonly buf: (TaggedLine | undefined)[];
  private next = 0;
  private size = 0;

  constructor(private readonly capacity: number) {
    this.buf = new Array<TaggedLine | undefined>(capacity);
  }

  push(entry: TaggedLine): void {
    if (this.capacity === 0) return;
    this.buf[this.next] = entry;
    this.next = (this.next + 1) % this.capacity;
    if (this.size < this.capacity) this.size++;
  }

  /** Last n matching lines, oldest first. */
  tail(n: number, stream: OutputStream | "all"): string[] {
    const out: string[] = [];
    for (let k = 1; k <= this.size && out.length < n; k++) {
      const e = this.buf[(this.next - k + this.capacity) % this.capacity];
      if (e && (stream === "all" || e.stream === stream)) out.push(e.line);
    }
    return out.reverse();
  }
}

/**
 * Append-only log sink. `Bun.file(path).writer()` writes from offset 0 *over* the old content
 * (neither truncates nor appends), so we open the fd ourselves with O_APPEND.
 */
export class AppendLog {
  private readonly fd: number;
  private readonly sink: Bun.FileSink;
  private closed = false;

  constructor(path: string) {
    mkdirSync(dirname(path), { recursive: true });
    this.fd = openSync(path, "a");
    this.sink = Bun.file(this.fd).writer();
  }

  write(line: string): void {
    if (this.closed) return;
    try {
      this.sink.write(line + "\n");
    } catch {
      // A full disk must not take the supervisor down; the ring buffer still has the lines.
    }
  }

  flush(): void {
    if (this.closed) return;
    try {
      void Promise.resolve(this.sink.flush()).catch(() => {});
    } catch {
      /* see write() */
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await this.sink.end();
    } catch {
      /* see write() */
    }
    // FileSink.end() on an fd-backed file does not close the fd.
    try {
      closeSync(this.fd);
    } catch {
      /* already closed */
    }
  }
}

/**
 * Bytes in, lines out: partial lines are carried over, "\r\n" is accepted, and a "line" longer than
 * MAX_LINE_CHARS is cut into pieces. `end()` delivers a final line that has no newline.
 */
export class LineSplitter {
  private readonly decoder = new TextDecoder();
  private partial = "";

  constructor(private readonly onLine: (line: string) => void) {}

  push(bytes: Uint8Array): void {
    this.partial += this.decoder.decode(bytes, { stream: true });
    const parts = this.partial.split("\n");
    this.partial = parts.pop() ?? "";
    for (const p of parts) this.emit(p);
    while (this.partial.length > MAX_LINE_CHARS) {
      this.emit(this.partial.slice(0, MAX_LINE_CHARS));
      this.partial = this.partial.slice(MAX_LINE_CHARS);
    }
  }

  end(): void {
    this.partial += this.decoder.decode();
    if (this.partial.length > 0) this.emit(this.partial);
    this.partial = "";
  }

  private emit(line: string): void {
    this.onLine(line.endsWith("\r") ? line.slice(0, -1) : line);
  }
}

/**
 * Read a byte stream, split it into lines, call onLine for each and onChunkDone after each chunk.
 * Resolves at EOF or when cancelled; never rejects.
 */
export function pumpLines(
  stream: ReadableStream<Uint8Array>,
  onLine: (line: string) => void,
  onChunkDone: () => void,
): { done: Promise<void>; cancel: () => void } {
  const reader = stream.getReader();
  const lines = new LineSplitter(onLine);
  const done = (async () => {
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        lines.push(value);
        onChunkDone();
      }
    } catch {
      // Read error or cancel: treat as EOF.
    }
    lines.end();
  })();
  return {
    done,
    cancel: () => {
      reader.cancel().catch(() => {});
    },
  };
}
