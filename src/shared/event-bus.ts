/**
 * A typed event bus: one map from event name to payload type (`M`), so publishers and subscribers
 * agree at compile time. Events get increasing ids; a bounded buffer serves `Last-Event-ID` replay.
 * Generic: the daemon's own event map lives in src/events.ts.
 */
export type EventMap = Record<string, object>;

/** One delivered event; a union over the map, so `switch (e.type)` narrows `e.data`. */
export type BusEvent<M extends EventMap> = {
  [K in keyof M & string]: { id: number; type: K; /** ms since the epoch */ time: number; data: M[K] };
}[keyof M & string];

export type BusListener<M extends EventMap> = (event: BusEvent<M>) => void;

export class EventBus<M extends EventMap> {
  private buffer: BusEvent<M>[] = [];
  private readonly listeners = new Set<BusListener<M>>();
  private nextId = 1;

  constructor(
    private readonly capacity: number,
    private readonly now: () => number = Date.now,
  ) {}

  publish<K extends keyof M & string>(type: K, data: M[K]): BusEvent<M> {
    const event = { id: this.nextId++, type, time: this.now(), data } as BusEvent<M>;
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
  since(afterId: number): BusEvent<M>[] {
    return this.buffer.filter((e) => e.id > afterId);
  }

  /** Id of the oldest event still buffered (0 when none): replay from before it has a gap. */
  get oldestId(): number {
    return this.buffer[0]?.id ?? 0;
  }

  /** Every event: replays those after `afterId` (if given) synchronously, then delivers live ones. */
  subscribe(listener: BusListener<M>, afterId?: number): () => void {
    if (afterId !== undefined) for (const e of this.since(afterId)) listener(e);
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** One event type, with its payload typed. */
  on<K extends keyof M & string>(type: K, handler: (data: M[K], event: BusEvent<M>) => void): () => void {
    return this.subscribe((e) => {
      if (e.type === type) handler(e.data as M[K], e);
    });
  }

  get subscriberCount(): number {
    return this.listeners.size;
  }
}
