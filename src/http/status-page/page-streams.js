// rbee-hive status page, part of one script (see assets.ts: the parts are joined in order).

// ---------- server-sent events over fetch ----------

/** Parse an SSE body; calls onMessage({id, event, data}) per message. Resolves when the body ends. */
async function readSse(res, onMessage) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  let msg = { id: undefined, event: undefined, data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let nl;
    while ((nl = buf.indexOf("\n")) >= 0) {
      let line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (line.endsWith("\r")) line = line.slice(0, -1);
      if (line === "") {
        if (msg.data.length) onMessage({ id: msg.id, event: msg.event, data: msg.data.join("\n") });
        msg = { id: undefined, event: undefined, data: [] };
        continue;
      }
      if (line.startsWith(":")) continue; // comment: connected, keep-alive
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let val = colon < 0 ? "" : line.slice(colon + 1);
      if (val.startsWith(" ")) val = val.slice(1);
      if (field === "data") msg.data.push(val);
      else if (field === "id") msg.id = val;
      else if (field === "event") msg.event = val;
    }
  }
}

/**
 * Follow an SSE route: reconnect with backoff (1 s doubling to 30 s, ±20 %) and Last-Event-ID.
 * onMessage returns "done" to end the stream for good.
 */
function follow(path, { onMessage, onState = () => {}, beforeReconnect, stopOn404 = false }) {
  let stopped = false;
  let finished = false;
  let ctrl = null;
  let lastId = null;
  let attempt = 0;
  const run = async () => {
    while (!stopped && !finished) {
      if (attempt > 0 && beforeReconnect) {
        try {
          // A restarted hive numbers its events anew: replay all it has.
          if ((await beforeReconnect()) === "reset") lastId = "0";
        } catch (e) {
          if (e instanceof ApiError && e.status === 401) return unauthorized(e);
        }
      }
      if (stopped) return;
      ctrl = new AbortController();
      try {
        const headers = authHeaders({ accept: "text/event-stream" });
        if (lastId !== null) headers["last-event-id"] = lastId;
        onState(attempt ? "reconnecting" : "connecting");
        const res = await fetch(path, { headers, signal: ctrl.signal, cache: "no-store" });
        if (!res.ok) throw await apiError(res);
        attempt = 0;
        onState("live");
        await readSse(res, (m) => {
          if (m.id !== undefined) lastId = m.id;
          if (onMessage(m) === "done") {
            finished = true;
            ctrl.abort();
          }
        });
      } catch (e) {
        if (stopped || finished) return;
        if (e instanceof ApiError && e.status === 401) return unauthorized(e);
        if (e instanceof ApiError && e.status === 404 && stopOn404) {
          onState("gone");
          return;
        }
      }
      if (stopped || finished) return;
      attempt++;
      const delay = Math.min(30_000, 1000 * 2 ** (attempt - 1)) * (0.8 + Math.random() * 0.4);
      onState("waiting", delay);
      await sleep(delay);
    }
  };
  run().catch((e) => notice(`stream ${path} failed: ${e?.message ?? e}`, true));
  return {
    stop() {
      stopped = true;
      ctrl?.abort();
    },
  };
}

// ---------- list loading, throttled ----------

const loaders = {
  hive: loadHive,
  workers: loadWorkers,
  downloads: loadDownloads,
  models: loadModels,
  devices: loadDevices,
};
const ALL = Object.keys(loaders);
const pending = new Set();
let refreshTimer = null;
let lastRefresh = 0;

/** Re-read these lists soon: coalesced, and never more often than EVENT_REFRESH_GAP_MS. */
function scheduleRefresh(...names) {
  for (const n of names) pending.add(n);
  if (refreshTimer || !state.connected) return;
  const wait = Math.max(100, lastRefresh + EVENT_REFRESH_GAP_MS - performance.now());
  refreshTimer = setTimeout(runRefresh, wait);
}

async function runRefresh() {
  refreshTimer = null;
  lastRefresh = performance.now();
  const names = [...pending];
  pending.clear();
  await Promise.all(names.map((n) => loaders[n]().catch((e) => failed(`reading ${n}`, e))));
}

async function loadHive() {
  const h = await api("/v1/hive");
  state.hive = h;
  state.hiveSeenAt = performance.now();
  renderHive();
  return h;
}

/** Reads of one list may overlap (an action's own read, an event's): apply none older than the last applied. */
const answered = {};
function newest(name) {
  const seq = (answered[name + "#"] = (answered[name + "#"] ?? 0) + 1);
  return () => (seq > (answered[name] ?? 0) ? ((answered[name] = seq), true) : false);
}

async function loadWorkers() {
  const fresh = newest("workers");
  const { workers } = await api("/v1/workers/list");
  if (!fresh()) return;
  state.workers = new Map(workers.map((w) => [w.id, w]));
  renderWorkers();
}

async function loadDownloads() {
  const fresh = newest("downloads");
  const { downloads } = await api("/v1/models/downloads");
  if (!fresh()) return;
  const next = new Map();
  for (const d of downloads) {
    const live = state.downloads.get(d.id);
    // A progress stream may be ahead of the list: keep the larger byte count while running.
    if (live && RUNNING_DOWNLOAD.has(d.state) && live.bytes_downloaded > d.bytes_downloaded) next.set(d.id, { ...d, bytes_downloaded: live.bytes_downloaded });
    else next.set(d.id, d);
  }
  state.downloads = next;
  renderDownloads();
  followDownloads();
}

async function loadModels() {
  const { models } = await api("/v1/models");
  state.models = models;
  renderModels();
}

async function loadDevices() {
  try {
    state.devices = await api("/v1/devices");
    state.devicesError = null;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) throw e;
    state.devices = null;
    state.devicesError = e instanceof ApiError && e.status === 404 ? "This hive does not serve /v1/devices." : `Devices unavailable: ${e.message}`;
  }
  renderDevices();
}
