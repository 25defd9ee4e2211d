// The dashboard's layout, per stream id: views, hidden channels, zoom, XY channels,
// spectrum scale; plus the time window. Kept in the URL (`?layout=...&window=30`,
// so a link reproduces the view) and in localStorage (for the next visit). The URL
// wins when it has one. Other URL parameters (the token) are left as they are.

const KEY = "sensorstream.layout";
const MAX_STREAMS = 200;   // a layout remembers at most this many streams (oldest forgotten)

function parse(text) {
  try {
    const v = JSON.parse(text);
    return v && typeof v === "object" && !Array.isArray(v) ? v : null;
  } catch { return null; }
}

const params = new URLSearchParams(location.search);
let streams = parse(params.get("layout"));
if (!streams) {
  try { streams = parse(localStorage.getItem(KEY)); } catch { streams = null; }
}
streams ??= {};
let timer = null;
let windowS = null;

export function get(id) {
  const v = streams[id];
  return v && typeof v === "object" ? v : {};
}

export function set(id, value, win) {
  delete streams[id];
  streams[id] = JSON.parse(JSON.stringify(value));   // drops undefined fields
  const ids = Object.keys(streams);
  if (ids.length > MAX_STREAMS) for (const old of ids.slice(0, ids.length - MAX_STREAMS)) delete streams[old];
  windowS = win;
  clearTimeout(timer);
  timer = setTimeout(write, 250);
}

export function setWindow(win) {
  if (windowS === win) return;
  const first = windowS === null;
  windowS = win;
  if (first) return;   // the page's own start-up choice: nothing to write yet
  clearTimeout(timer);
  timer = setTimeout(write, 250);
}

function write() {
  const text = JSON.stringify(streams);
  try { localStorage.setItem(KEY, text); } catch { /* storage off */ }
  const p = new URLSearchParams(location.search);
  p.set("layout", text);
  if (windowS) p.set("window", String(windowS));
  history.replaceState(history.state, "", `${location.pathname}?${p}${location.hash}`);
}

/** Write now (tests, and before a link is copied). */
export function flush() {
  clearTimeout(timer);
  write();
}

export function all() {
  return JSON.parse(JSON.stringify(streams));
}
