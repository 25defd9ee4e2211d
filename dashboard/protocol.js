// Wire contract v1: binary batch frames (little-endian, 24-byte header).
//   u8 kind=1 | u8 flags | u16 C | u32 key | u32 N | u32 reserved | u64 seq
//   f64[N] timestamps | f32[C*N] values, channel-major
// The views returned here are zero-copy: they alias the frame's ArrayBuffer.

export const HEADER_SIZE = 24;
export const KIND_BATCH = 1;
export const FLAG_REPLAYED = 0x01;
export const PROTOCOL_VERSION = 1;

/** Decode one binary frame. Returns null for unknown kinds (ignored, per contract). */
export function decodeBatch(buf) {
  if (buf.byteLength < HEADER_SIZE) throw new Error(`short frame (${buf.byteLength} bytes)`);
  const dv = new DataView(buf);
  const kind = dv.getUint8(0);
  if (kind !== KIND_BATCH) return null;
  const flags = dv.getUint8(1);
  const C = dv.getUint16(2, true);
  const key = dv.getUint32(4, true);
  const N = dv.getUint32(8, true);
  // u64 seq as a Number: exact up to 2^53, far beyond any real stream.
  const seq = dv.getUint32(16, true) + dv.getUint32(20, true) * 4294967296;
  const need = HEADER_SIZE + 8 * N + 4 * C * N;
  if (buf.byteLength !== need) throw new Error(`frame is ${buf.byteLength} bytes, header says ${need}`);
  return {
    key, seq, flags, C, N,
    replayed: (flags & FLAG_REPLAYED) !== 0,
    ts: new Float64Array(buf, HEADER_SIZE, N),
    vals: new Float32Array(buf, HEADER_SIZE + 8 * N, C * N),
  };
}

/** The WebSocket URL for this page: same origin, path "ws" next to the page, token and control_token passed on. */
export function wsUrl(loc = window.location) {
  const u = new URL("ws", loc.href);
  u.protocol = loc.protocol === "https:" ? "wss:" : "ws:";
  u.search = "";
  u.hash = "";
  const q = new URLSearchParams(loc.search);
  for (const name of ["token", "control_token"]) if (q.get(name) !== null) u.searchParams.set(name, q.get(name));
  return u.toString();
}
