/**
 * One bus for lifecycle events: the `/v1/events` stream, metrics and (later) the audit log all read it.
 * Events get increasing ids; a bounded buffer serves `Last-Event-ID` replay.
 */
export interface HiveEvent<T = Record<string, unknown>> {
  id: number;
  type: string;
  /** Milliseconds since the epoch. */
  time: number;
  data: T;
}

export type EventListener = (event: HiveEvent) => void;

export class EventBus {
  private buffer: HiveEvent[] = [];
  private listeners = new Set<EventListener>();
  private nextId = 1;

  constructor(
    private readonly capacity = 1000,
    private readonly now: () => number = Date.now,
  ) {}

  publish(type: string, data: Record<string, unknown>): HiveEvent {
    const event: HiveEvent = { id: this.nextId++, type, time: this.now(), data };
    this.buffer.push(event);
    if (this.buffer.length > this.capacity) this.buffer.splice(0, this.buffer.length - this.capacity);
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch {
        // A broken subscriber must not break the publisher or the others.
      }
    }
    return event;
  }

  /** Buffered events with id > afterId (oldest first). */
  since(afterId: number): HiveEvent[] {
    return this.buffer.filter((e) => e.id > afterId);
  }

  /** Id of the oldest event still buffered (0 when none): replay from before it has a gap. */
  get oldestId(): number {
    return this.buffer[0]?.id ?? 0;
  }

  /** Replays events after `afterId` (if given) synchronously, then delivers live ones. */
  subscribe(listener: EventListener, afterId?: number): () => void {
    if (afterId !== undefined) for (const e of this.since(afterId)) listener(e);
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get subscriberCount(): number {
    return this.listeners.size;
  }
}
