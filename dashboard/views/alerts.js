// Alerts in the dashboard: the server's `alert` messages (docs/protocol.md#alerts)
// and this browser's own ad-hoc limits, in one store. The alert list shows every
// transition (time, stream, channel, value, state, acknowledged); the charts shade
// the time band an alert fired in; gauges turn amber (warning) or red (critical).
// Acknowledgements and ad-hoc limits are this browser's only (localStorage).

import { h, loadJSON, saveJSON } from "./util.js";

const MAX_EVENTS = 200;       // rows kept in the list
const MAX_BANDS = 64;         // shaded bands kept per stream
const LIMITS_KEY = "sensorstream.limits";
const ACK_KEY = "sensorstream.acked";

const alerts = new Map();     // alert id -> {id, stream, channel, severity, state, value, t, message, above, below, local}
const events = [];            // newest first: {id, stream, channel, state, severity, value, t, message, local}
const bands = new Map();      // stream id -> [{id, channel, severity, t0, t1|null}]
let acked = new Set(loadJSON(ACK_KEY, []));   // `${id}@${t of its firing}`: acknowledged firings
const limits = loadJSON(LIMITS_KEY, {});     // `${stream}\u0000${channel}` -> {above, below}
let panel = null, list = null, countEl = null;
let dirty = true;

/** One transition (a server `alert` message, or a local limit crossing). */
export function onAlert(msg, local = false) {
  if (!msg || typeof msg.id !== "string" || (msg.state !== "firing" && msg.state !== "resolved")) return;
  const a = { id: msg.id, stream: String(msg.stream ?? ""), channel: msg.channel ?? null, severity: msg.severity === "critical" ? "critical" : "warning",
    state: msg.state, value: typeof msg.value === "number" ? msg.value : null, t: +msg.t || Date.now() / 1000,
    message: String(msg.message ?? ""), above: msg.above ?? null, below: msg.below ?? null, local };
  const prev = alerts.get(a.id);
  // A late subscriber is sent what fires now; a repeat of a known firing changes nothing.
  if (prev && prev.state === a.state && prev.t === a.t) return;
  if (a.state === "firing") a.firedAt = a.t;
  else a.firedAt = prev?.firedAt ?? null;
  alerts.set(a.id, a);
  events.unshift({ ...a });
  if (events.length > MAX_EVENTS) events.length = MAX_EVENTS;
  let bs = bands.get(a.stream);
  if (!bs) bands.set(a.stream, (bs = []));
  if (a.state === "firing") {
    bs.push({ id: a.id, channel: a.channel, severity: a.severity, t0: a.t, t1: null });
    if (bs.length > MAX_BANDS) bs.shift();
  } else {
    const open = bs.findLast((b) => b.id === a.id && b.t1 === null);
    if (open) open.t1 = a.t;
  }
  dirty = true;
}

/** Shaded bands of a stream's chart: [{t0, t1 (null: still firing), severity, channel}]. */
export function bandsOf(streamId) {
  return bands.get(streamId) ?? [];
}

/** "critical", "warning" or null: the worst alert firing on this channel (or the whole stream) now. */
export function firingOn(streamId, channel) {
  let worst = null;
  for (const a of alerts.values()) {
    if (a.state !== "firing" || a.stream !== streamId || (a.channel !== null && a.channel !== channel)) continue;
    if (a.severity === "critical") return "critical";
    worst = "warning";
  }
  return worst;
}

/** The limits of the server's alerts on this channel (known from their messages). */
export function serverLimitsOf(streamId, channel) {
  const out = [];
  for (const a of alerts.values()) if (!a.local && a.stream === streamId && a.channel === channel) out.push({ above: a.above, below: a.below });
  return out;
}

export function isAcked(a) {
  return acked.has(`${a.id}@${a.firedAt}`);
}

function ack(a) {
  acked.add(`${a.id}@${a.firedAt}`);
  if (acked.size > 500) acked = new Set([...acked].slice(-400));
  saveJSON(ACK_KEY, [...acked]);
  dirty = true;
}

// ------------------------------------------------------------------ ad-hoc limits (this browser only)

export function limitOf(streamId, channel) {
  return limits[`${streamId}\u0000${channel}`] ?? null;
}

export function setLimit(streamId, channel, above, below) {
  const k = `${streamId}\u0000${channel}`;
  const ok = (x) => typeof x === "number" && Number.isFinite(x);
  if (!ok(above) && !ok(below)) delete limits[k];
  else limits[k] = { above: ok(above) ? above : null, below: ok(below) ? below : null };
  saveJSON(LIMITS_KEY, limits);
  const id = `local:${streamId}:${channel}`;
  const a = alerts.get(id);
  if (a && a.state === "firing") onAlert({ ...a, state: "resolved", t: Date.now() / 1000 }, true);   // a changed limit starts over
}

/**
 * Check a stream's ad-hoc limits over its samples newer than the last check
 * (called at the dashboard's text-update rate, not per sample arriving).
 */
export function checkLimits(sv, state) {
  for (let c = 0; c < sv.channels.length; c++) {
    const name = sv.channels[c].name, lim = limitOf(sv.id, name);
    if (!lim) continue;
    const s = sv.series, id = `local:${sv.id}:${name}`;
    const from = state.lastChecked.get(name) ?? -Infinity;
    let i = s.lowerBound(from === -Infinity ? s.tLast : from);
    if (from !== -Infinity) while (i < s.len && s.timeAt(i) <= from) i++;
    let firing = alerts.get(id)?.state === "firing";
    for (; i < s.len; i++) {
      const v = s.valueAt(c, i);
      if (v !== v) continue;
      const out = (lim.above !== null && v > lim.above) || (lim.below !== null && v < lim.below);
      if (out !== firing) {
        firing = out;
        onAlert({ id, stream: sv.id, channel: name, severity: "warning", state: out ? "firing" : "resolved", value: v, t: s.timeAt(i),
          message: `local limit: ${[lim.above !== null ? `> ${lim.above}` : "", lim.below !== null ? `< ${lim.below}` : ""].filter(Boolean).join(" or ")}`,
          above: lim.above, below: lim.below }, true);
      }
    }
    if (s.len) state.lastChecked.set(name, s.tLast);
  }
}

// ------------------------------------------------------------------ the list

function timeText(t) {
  const d = new Date(t * 1000);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

export function mountPanel(before) {
  countEl = h("span", { class: "alert-count", "data-testid": "alert-count" });
  list = h("tbody");
  panel = h("details", { class: "alerts", "data-testid": "alerts", open: true, hidden: true },
    h("summary", {}, h("span", { text: "Alerts" }), countEl),
    h("table", {},
      h("thead", {}, h("tr", {}, ...["time", "stream", "channel", "value", "state", "message", ""].map((x) => h("th", { text: x })))),
      list));
  before.parentElement.insertBefore(panel, before);
}

/** Redraw the list if anything changed (at the dashboard's text rate). */
export function renderPanel(formatValue) {
  if (!dirty || !panel) return;
  dirty = false;
  panel.hidden = events.length === 0;
  let firing = 0, unacked = 0;
  for (const a of alerts.values()) if (a.state === "firing") { firing++; if (!isAcked(a)) unacked++; }
  countEl.textContent = firing ? `${firing} firing${unacked ? `, ${unacked} not acknowledged` : ""}` : "none firing";
  countEl.dataset.level = firing ? ([...alerts.values()].some((a) => a.state === "firing" && a.severity === "critical") ? "critical" : "warning") : "";
  list.replaceChildren(...events.map((e) => {
    const cur = alerts.get(e.id);
    const isCurrentFiring = cur && cur.state === "firing" && e.state === "firing" && e.t === cur.t;
    const ackd = e.state === "firing" && acked.has(`${e.id}@${e.t}`);
    return h("tr", { "data-testid": "alert-row", "data-state": e.state, "data-severity": e.severity, "data-acked": String(ackd), "data-id": e.id },
      h("td", { text: timeText(e.t) }),
      h("td", { text: e.stream }),
      h("td", { text: e.channel ?? "(stream)" }),
      h("td", { text: e.value === null ? "–" : formatValue(e.value) }),
      h("td", {}, h("span", { class: `sev ${e.state === "firing" ? e.severity : "resolved"}`, text: e.state })),
      h("td", { text: e.local ? `${e.message} (this browser)` : e.message }),
      h("td", {}, e.state !== "firing" ? null : ackd ? h("span", { class: "acked", text: "acknowledged" })
        : h("button", { class: "tool", "data-testid": "ack", title: isCurrentFiring ? "Acknowledge: seen, someone is on it" : "Acknowledge this (past) firing",
          onclick: () => ack({ id: e.id, firedAt: e.t }) }, "Acknowledge")));
  }));
}

export function snapshot() {
  return { alerts: [...alerts.values()].map((a) => ({ ...a, acked: isAcked(a) })), events: events.map((e) => ({ ...e })), limits: { ...limits } };
}
