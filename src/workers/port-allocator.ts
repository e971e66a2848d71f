/**
 * Worker ports: not reserved by another worker of ours AND usable right now by a server that binds
 * WITHOUT SO_REUSEADDR (llama.cpp's llama-server does not set it).
 *
 * A bind probe alone cannot see that: our probe listener sets SO_REUSEADDR, so a port left in
 * TIME_WAIT by a server that set it too looks free, and the worker then fails to bind. On Linux
 * such a bind fails if ANY TCP socket (any state, any local address, v4 or v6) has that local port,
 * so /proc/net/tcp{,6} is read once per allocation and every port listed there counts as taken.
 * The bind probe stays (and is the only probe where /proc is missing, e.g. macOS).
 *
 * One exception keeps "a restarted worker gets its old port back": sockets a worker of ours left on
 * its port (its listener's TIME_WAIT/FIN_WAIT remnants) do not block the SAME binary, whose socket
 * options are the same: the SO_REUSEADDR bind probe answers exactly what it will see (remnants of a
 * server without SO_REUSEADDR, like llama-server, fail the probe; those of one with it do not).
 *
 * Allocation is synchronous, so two concurrent spawns can never get the same port. The cursor
 * starts at `min` again when the hive restarts; the /proc scan is what keeps that safe.
 */
import { readFileSync } from "node:fs";
import { HiveError } from "../shared/errors.ts";

/** One row of /proc/net/tcp{,6}: the local port and the kernel's TCP state number. */
export interface TcpSocketEntry {
  port: number;
  state: number;
}

export const TCP_STATE = { ESTABLISHED: 0x01, TIME_WAIT: 0x06, LISTEN: 0x0a } as const;

/** Linux's TIME_WAIT (and FIN_WAIT2) length: how long a dead worker's sockets linger. */
export const PORT_QUARANTINE_MS = 60_000;

export interface PortAllocatorOptions {
  min: number;
  max: number;
  /** Hosts to probe; a port counts as free only if every one of them binds. */
  probeHosts: string[];
  /** Injected for tests; default binds a TCP listener and closes it. */
  canBind?: (host: string, port: number) => boolean;
  /** Every TCP socket on the host, or null where that is unknown; default reads /proc. */
  tcpSockets?: () => TcpSocketEntry[] | null;
  /** Monotonic milliseconds, for quarantines; default performance.now. */
  now?: () => number;
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

/** Rows of /proc/net/tcp or tcp6: `sl local_address rem_address st …`, addresses as HEXADDR:HEXPORT. */
export function parseProcNetTcp(text: string): TcpSocketEntry[] {
  const out: TcpSocketEntry[] = [];
  for (const line of text.split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 4) continue;
    const local = f[1]!;
    const port = parseInt(local.slice(local.lastIndexOf(":") + 1), 16);
    const state = parseInt(f[3]!, 16);
    if (Number.isInteger(port) && Number.isInteger(state)) out.push({ port, state });
  }
  return out;
}

/** Every TCP socket of this network namespace; null without /proc/net/tcp (tcp6 is absent when IPv6 is off). */
export function readTcpSockets(): TcpSocketEntry[] | null {
  let v4: string;
  try {
    v4 = readFileSync("/proc/net/tcp", "utf8");
  } catch {
    return null;
  }
  let v6 = "";
  try {
    v6 = readFileSync("/proc/net/tcp6", "utf8");
  } catch {
    // no IPv6
  }
  return [...parseProcNetTcp(v4), ...parseProcNetTcp(v6)];
}

export class PortAllocator {
  private readonly reserved = new Set<number>();
  /** Port → monotonic time until which it is skipped (a worker could not bind it). */
  private readonly quarantined = new Map<number, number>();
  /** Port → the binary of our worker that last ran there, while its sockets may linger. */
  private readonly leftBy = new Map<number, { binary: string; until: number }>();
  /** Round-robin start, so a just-released port is not handed out again at once. */
  private cursor: number;
  private readonly canBind: (host: string, port: number) => boolean;
  private readonly tcpSockets: () => TcpSocketEntry[] | null;
  private readonly now: () => number;

  constructor(private readonly opts: PortAllocatorOptions) {
    this.cursor = opts.min;
    this.canBind = opts.canBind ?? canBindTcp;
    this.tcpSockets = opts.tcpSockets ?? readTcpSockets;
    this.now = opts.now ?? (() => performance.now());
  }

  private free(port: number, inUse: ReadonlySet<number>, binary: string | undefined): boolean {
    if (this.reserved.has(port) || this.quarantined.has(port)) return false;
    if (inUse.has(port) && (binary === undefined || this.leftBy.get(port)?.binary !== binary)) return false;
    return this.opts.probeHosts.every((h) => this.canBind(h, port));
  }

  /**
   * Reserve `preferred` if it is free (a restart keeps its port), else the next free one.
   * `binary` is the worker executable that will bind it (see the remnants exception above).
   */
  allocate(preferred?: number, binary?: string): number {
    const inUse = new Set((this.tcpSockets() ?? []).map((s) => s.port));
    const now = this.now();
    for (const [port, until] of this.quarantined) if (now >= until) this.quarantined.delete(port);
    for (const [port, left] of this.leftBy) if (now >= left.until) this.leftBy.delete(port);
    if (preferred !== undefined && preferred >= this.opts.min && preferred <= this.opts.max && this.free(preferred, inUse, binary)) {
      this.reserved.add(preferred);
      return preferred;
    }
    const size = this.opts.max - this.opts.min + 1;
    for (let i = 0; i < size; i++) {
      const port = this.opts.min + ((this.cursor - this.opts.min + i) % size);
      if (this.free(port, inUse, binary)) {
        this.reserved.add(port);
        this.cursor = port + 1 > this.opts.max ? this.opts.min : port + 1;
        return port;
      }
    }
    throw new HiveError(
      503,
      "NO_FREE_PORT",
      `no free worker port in ${this.opts.min}-${this.opts.max} (${this.reserved.size} held by workers, ${this.quarantined.size} skipped after bind failures); widen [workers] port_min/port_max`,
    );
  }

  /** Reserve a port a running worker already holds (one adopted from a previous hive), unprobed. */
  hold(port: number): void {
    this.reserved.add(port);
  }

  /** Give the port back; `ranBinary` when a worker process of that binary ran there (its sockets may linger). */
  release(port: number, ranBinary?: string): void {
    this.reserved.delete(port);
    if (ranBinary !== undefined) this.leftBy.set(port, { binary: ranBinary, until: this.now() + PORT_QUARANTINE_MS });
  }

  /** Skip `port` for a while: a worker just failed to bind it, whatever the probes say. */
  quarantine(port: number, ms = PORT_QUARANTINE_MS): void {
    this.quarantined.set(port, this.now() + ms);
  }

  /** Whether some socket listens on `port` now (null where unknown): after our worker died, someone else's. */
  hasListener(port: number): boolean | null {
    const sockets = this.tcpSockets();
    return sockets === null ? null : sockets.some((s) => s.port === port && s.state === TCP_STATE.LISTEN);
  }
}
