/** The Bun server, known only after binding; SSE routes use it to lift the idle timeout per request. */
export interface ServerRef {
  current: { timeout(request: Request, seconds: number): void } | null;
}
