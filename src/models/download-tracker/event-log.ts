/**
 * A download job's events: numbered from 1, the last EVENT_HISTORY kept so a subscriber that
 * reconnects with Last-Event-ID gets what it missed, and fanned out to the live listeners.
 */
import type { ProgressEvent } from "../schemas.ts";

export interface TrackedEvent {
  id: number;
  data: ProgressEvent;
}

export type DownloadListener = (event: TrackedEvent) => void;

/** Events kept per job for replay; the terminal event is always the last one kept. */
const EVENT_HISTORY = 100;

export class EventLog {
  private readonly events: TrackedEvent[] = [];
  private readonly listeners = new Set<DownloadListener>();
  private nextId = 1;

  /** `onListenerError`: a listener that throws is reported there and never stops the others. */
  constructor(private readonly onListenerError: (e: unknown) => void) {}

  get lastId(): number {
    return this.nextId - 1;
  }

  get listenerCount(): number {
    return this.listeners.size;
  }

  append(data: ProgressEvent): TrackedEvent {
    const ev: TrackedEvent = { id: this.nextId++, data };
    this.events.push(ev);
    if (this.events.length > EVENT_HISTORY) this.events.splice(0, this.events.length - EVENT_HISTORY);
    for (const l of [...this.listeners]) this.deliver(l, ev);
    return ev;
  }

  /** Deliver, synchronously, the events after `afterId`, or without an id the latest one. */
  replay(afterId: number | undefined, listener: DownloadListener): void {
    const missed = afterId === undefined || !Number.isFinite(afterId) ? this.events.slice(-1) : this.events.filter((e) => e.id > afterId);
    for (const e of missed) this.deliver(listener, e);
  }

  /** Returns the unsubscribe function. */
  listen(listener: DownloadListener): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  /** After the terminal event: nobody hears anything more. */
  close(): void {
    this.listeners.clear();
  }

  private deliver(listener: DownloadListener, ev: TrackedEvent): void {
    try {
      listener(ev);
    } catch (e) {
      this.onListenerError(e);
    }
  }
}
