/**
 * `GET /openapi`: the API reference as one plain HTML page rendered on the host from the served
 * OpenAPI document. No script, no CDN: it works on an air-gapped GPU host (the OpenAPI plugin's own
 * UI loads its viewer from a CDN, so it is turned off).
 */
interface Schema {
  type?: string | string[];
  description?: string;
  properties?: Record<string, Schema>;
  required?: string[];
  items?: Schema;
  anyOf?: Schema[];
  const?: unknown;
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  maxLength?: number;
  pattern?: string;
  $ref?: string;
}

interface Operation {
  summary?: string;
  tags?: string[];
  parameters?: Array<{ name: string; in: string; required?: boolean; schema?: Schema; description?: string }>;
  requestBody?: { content?: Record<string, { schema?: Schema }> };
  responses?: Record<string, { description?: string }>;
}

export interface OpenApiSpec {
  info?: { title?: string; version?: string; description?: string };
  paths?: Record<string, Record<string, Operation>>;
}

const escape = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

/** A one-line type: `integer 0..255`, `string ≤ 512`, `"loading" | "idle"`. */
function typeOf(s: Schema | undefined): string {
  if (!s) return "";
  if (s.$ref) return s.$ref.split("/").pop() ?? "";
  if (s.const !== undefined) return JSON.stringify(s.const);
  if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (s.anyOf) return [...new Set(s.anyOf.map(typeOf))].join(" | ");
  if (s.type === "array") return `${typeOf(s.items)}[]`;
  const bounds = [
    s.minimum !== undefined || s.maximum !== undefined ? `${s.minimum ?? ""}..${s.maximum ?? ""}` : "",
    s.maxLength !== undefined ? `≤ ${s.maxLength} chars` : "",
  ].filter(Boolean);
  return [Array.isArray(s.type) ? s.type.join(" | ") : (s.type ?? "any"), ...bounds].join(" ");
}

function fieldRows(schema: Schema | undefined): string {
  const props = schema?.properties;
  if (!props) return "";
  const rows = Object.entries(props).map(
    ([name, p]) =>
      `<tr><td><code>${escape(name)}</code>${schema?.required?.includes(name) ? "" : " <small>(optional)</small>"}</td>` +
      `<td>${escape(typeOf(p))}</td><td>${escape(p.description ?? "")}</td></tr>`,
  );
  return `<table>${rows.join("")}</table>`;
}

function operationHtml(method: string, path: string, op: Operation): string {
  const params = (op.parameters ?? []).map(
    (p) => `<tr><td><code>${escape(p.name)}</code> <small>(${escape(p.in)})</small></td><td>${escape(typeOf(p.schema))}</td><td>${escape(p.description ?? "")}</td></tr>`,
  );
  const body = op.requestBody?.content?.["application/json"]?.schema;
  const responses = Object.entries(op.responses ?? {})
    // Elysia describes schema-only answers as "Response for status N": the code says as much.
    .map(([code, r]) => `<code>${escape(code)}</code>${r.description && !r.description.startsWith("Response for status") ? ` ${escape(r.description)}` : ""}`)
    .join(", ");
  return `<section id="${escape(`${method}-${path}`)}"><h3><span class="m">${method.toUpperCase()}</span> <code>${escape(path)}</code></h3>
<p>${escape(op.summary ?? "")}</p>
${params.length ? `<h4>Parameters</h4><table>${params.join("")}</table>` : ""}
${body ? `<h4>JSON body</h4>${fieldRows(body)}` : ""}
${responses ? `<p><small>Answers: ${responses}</small></p>` : ""}</section>`;
}

export function renderDocsPage(spec: OpenApiSpec): string {
  const byTag = new Map<string, string[]>();
  for (const [path, ops] of Object.entries(spec.paths ?? {})) {
    for (const [method, op] of Object.entries(ops)) {
      const tag = op.tags?.[0] ?? "other";
      byTag.set(tag, [...(byTag.get(tag) ?? []), operationHtml(method, path, op)]);
    }
  }
  const sections = [...byTag].map(([tag, ops]) => `<h2>${escape(tag)}</h2>${ops.join("\n")}`).join("\n");
  const title = `${spec.info?.title ?? "API"} ${spec.info?.version ?? ""}`.trim();
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${escape(title)} — HTTP API</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
code{font:13px ui-monospace,monospace}table{border-collapse:collapse;margin:.3rem 0}td{border-top:1px solid #ddd;padding:.2rem .6rem;vertical-align:top}
.m{display:inline-block;min-width:4.5rem;font:600 13px ui-monospace,monospace}section{border-left:3px solid #ccc;padding-left:.8rem;margin:1rem 0}</style></head>
<body><h1>${escape(title)} — HTTP API</h1><p>${escape(spec.info?.description ?? "")}</p>
<p>Machine-readable: <a href="/openapi/json"><code>GET /openapi/json</code></a> (OpenAPI 3.1).</p>
${sections}</body></html>`;
}
