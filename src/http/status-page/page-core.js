// rbee-hive status page: plain JavaScript, no dependencies, served by the hive itself (works offline).
// Live data comes from GET /v1/events and the download progress streams, read with fetch() so
// the token travels as a Bearer header (EventSource cannot send one); lists are re-read on
// relevant events (throttled) and otherwise every 5 s at most. No innerHTML anywhere: model refs
// and log lines are untrusted text.
"use strict";

const TOKEN_KEY = "rbee-hive.token";
const REFRESH_MS = 5000; // nothing polls faster than this
const EVENT_REFRESH_GAP_MS = 1000; // event-driven list reads are at least this far apart
const MAX_PROGRESS_STREAMS = 3; // browsers allow ~6 connections per host; keep room for requests
const MAX_EVENT_LINES = 100;
const LOG_TAIL = 200;
const RUNNING_DOWNLOAD = new Set(["planning", "downloading"]);

const $ = (id) => document.getElementById(id);
const authMode = document.querySelector('meta[name="rbee-auth"]')?.content === "none" ? "none" : "token";

const state = {
  token: null,
  hive: null,
  hiveSeenAt: 0, // performance.now() when hive.uptime_s was read
  workers: new Map(),
  downloads: new Map(),
  models: [],
  devices: null,
  devicesError: null,
  backends: null,
  connected: false,
};

// ---------- small helpers ----------

function el(tag, props = {}, ...kids) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null) continue;
    if (k === "dataset") Object.assign(n.dataset, v);
    else if (k === "text") n.textContent = v;
    else if (k === "className" || k === "type" || k === "hidden" || k === "disabled" || k === "value") n[k] = v;
    else n.setAttribute(k, v);
  }
  n.append(...kids);
  return n;
}

function setText(node, text) {
  const s = String(text);
  if (node.textContent !== s) node.textContent = s;
}

const dash = (v) => (v === undefined || v === null || v === "" ? "—" : String(v));

function fmtBytes(n) {
  if (typeof n !== "number" || !Number.isFinite(n)) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

function fmtDuration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds) || seconds < 0) return "—";
  const s = Math.floor(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

const clock = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const shortId = (id) => (typeof id === "string" && id.length > 16 ? `${id.slice(0, 15)}…` : dash(id));

function notice(text, bad = false) {
  const n = $("notice");
  n.classList.toggle("bad", bad);
  setText(n, text);
}

// ---------- API ----------

class ApiError extends Error {
  constructor(status, code, message) {
    super(`${status} ${code}: ${message}`);
    this.status = status;
    this.code = code;
  }
}

function authHeaders(extra = {}, token = state.token) {
  return token ? { ...extra, authorization: `Bearer ${token}` } : extra;
}

async function apiError(res) {
  let code = res.statusText || "ERROR";
  let message = "";
  try {
    const body = await res.json();
    code = body?.error?.code ?? code;
    message = body?.error?.message ?? "";
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(res.status, code, message);
}

async function api(path, { json, method = json === undefined ? "GET" : "POST", token } = {}) {
  const headers = authHeaders(json === undefined ? {} : { "content-type": "application/json" }, token ?? state.token);
  const res = await fetch(path, { method, headers, cache: "no-store", body: json === undefined ? undefined : JSON.stringify(json) });
  if (!res.ok) throw await apiError(res);
  return res.status === 204 ? null : res.json();
}

// Every caller funnels failures here: a 401 means the token is no longer good.
function failed(what, e) {
  if (e instanceof ApiError && e.status === 401) return unauthorized(e);
  notice(`${what} failed: ${e instanceof Error ? e.message : String(e)}`, true);
}
