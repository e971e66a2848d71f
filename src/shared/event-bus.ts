/**
 * A typed event bus: one map from event name to payload type (`M`), so publishers and subscribers
 * agree at compile time. Events get increasing ids; a bounded buffer serves `Last-Event-ID` replay.
 * Generic: the daemon's own event map lives in src/events.ts.
 *
 * Transient types (given to the constructor) are for listeners of that type only (`on`): they get
 * no id, are not buffered and never reach `subscribe` (the events stream). High-rate telemetry
 * (one event per request or health check) must not evict lifecycle events from the replay buffer.
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
  /** Listeners of one type (`on`), so a publish only calls those that care. */
  private readonly typed = new Map<string, Set<BusListener<M>>>();
  private nextId = 1;

  constructor(
    private readonly capacity: number,
    private readonly now: () => number = Date.now,
    private readonly transient: ReadonlySet<string> = new Set(),
  ) {}

  publish<K extends keyof M & string>(type: K, data: M[K]): BusEvent<M> {
    const isTransient = this.transient.has(type);
    const event = { id: isTransient ? 0 : this.nextId++, type, time: this.now(), data } as BusEvent<M>;
    if (!isTransient) {
      this.buffer.push(event);
      if (this.buffer.length > this.capacity) this.buffer.splice(0, this.buffer.length - this.capacity);
      deliver(this.listeners, event);
    }
    const typed = this.typed.get(type);
    if (typed) deliver(typed, event);
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

  /** One event type (transient ones included), with its payload typed. */
  on<K extends keyof M & string>(type: K, handler: (data: M[K], event: BusEvent<M>) => void): () => void {
    let set = this.typed.get(type);
    if (!set) this.typed.set(type, (set = new Set()));
    const listener: BusListener<M> = (e) => handler(e.data as M[K], e);
    set.add(listener);
    return () => set.delete(listener);
  }

  get subscriberCount(): number {
    let n = this.listeners.size;
    for (const set of this.typed.values()) n += set.size;
    return n;
  }
}

function deliver<M extends EventMap>(listeners: Iterable<BusListener<M>>, event: BusEvent<M>): void {
  for (const listener of listeners) {
    try {
      listener(event);
    } catch {
      // A broken subscriber must not break the publisher or the others.
    }
  }
}
