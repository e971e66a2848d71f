// page-core.js is browser code the hive serves; the server imports it only as text (`with { type: "text" }`).
declare const source: string;
export default source;
