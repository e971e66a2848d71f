/**
 * Worker ports: not reserved by another worker of ours AND bindable right now on the worker host.
 * Allocation is synchronous, so two concurrent spawns can never get the same port.
 */
import { HiveError } from "./shared/errors.ts";

export interface PortAllocatorOptions {
  min: number;
  max: number;
  /** Hosts to probe; a port counts as free only if every one of them binds. */
  probeHosts: string[];
  /** Injected for tests; default binds a TCP listener and closes it. */
  canBind?: (host: string, port: number) => boolean;
}

export function canBindTcp(host: string, port: number): boolean {
  try {
    const listener = Bun.listen({ hostname: host, port, socket: { data() {} } });
    listener.stop(true);
    return true;
  } catch {
    return false;
  }
}

export class PortAllocator {
  private readonly reserved = new Set<number>();
  /** Round-robin start, so a just-released port is not handed out again at once. */
  private cursor: number;
  private readonly canBind: (host: string, port: number) => boolean;

  constructor(private readonly opts: PortAllocatorOptions) {
    this.cursor = opts.min;
    this.canBind = opts.canBind ?? canBindTcp;
  }

  private free(port: number): boolean {
    return !this.reserved.has(port) && this.opts.probeHosts.every((h) => this.canBind(h, port));
  }

  /** Reserve `preferred` if it is free (a restart keeps its port), else the next free one. */
  allocate(preferred?: number): number {
    if (preferred !== undefined && preferred >= this.opts.min && preferred <= this.opts.max && this.free(preferred)) {
      this.reserved.add(preferred);
      return preferred;
    }
    const size = this.opts.max - this.opts.min + 1;
    for (let i = 0; i < size; i++) {
      const port = this.opts.min + ((this.cursor - this.opts.min + i) % size);
      if (this.free(port)) {
        this.reserved.add(port);
        this.cursor = port + 1 > this.opts.max ? this.opts.min : port + 1;
        return port;
      }
    }
    throw new HiveError(
      503,
      "NO_FREE_PORT",
      `no free worker port in ${this.opts.min}-${this.opts.max} (${this.reserved.size} held by workers); widen [workers] port_min/port_max`,
    );
  }

  release(port: number): void {
    this.reserved.delete(port);
  }
}
