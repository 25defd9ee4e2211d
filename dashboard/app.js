// sensorstream dashboard: catalog, subscriptions, ring buffers, charts, connection UI.
// Plain ES modules, no build step, no dependencies; speaks wire contract v1 only.

import { Connection } from "./conn.js";
import { decodeBatch, wsUrl, PROTOCOL_VERSION } from "./protocol.js";
import { Series, capacityFor, MAX_WINDOW_S } from "./ring.js";
import { Chart, formatValue, clockLabel, LANE_GAP, LANE_MIN_PX } from "./chart.js";
import { seriesToCsv, downloadText } from "./csv.js";
import { resumePoints, applyResumed, noteEpoch } from "./resume.js";
import { streamBadge, accessText, AccessProbe, NO_SOURCES } from "./status.js";
import { attachViews, spanOf } from "./views/index.js";
import { spectrumStats } from "./views/spectrum.js";
import { onAlert, mountPanel as mountAlertPanel, renderPanel as renderAlertPanel, snapshot as alertsSnapshot, setLimit } from "./views/alerts.js";
import * as layout from "./views/layout.js";
import { Timeline } from "./timeline.js";
import { CommandPanel } from "./commands.js";
import { h } from "./views/util.js";

const WINDOWS = [[5, "5 s"], [30, "30 s"], [120, "2 min"], [600, "10 min"]];
const DOM_UPDATE_MS = 250;       // legend values, ages, counters: 4 Hz is plenty for text
const RECENT_SEQS = 512;         // per stream: last value of each recent batch (test hook)
const STAT_KEEP = 1200;          // frame/draw time samples kept
const PALETTES = {
  light: ["#1f6fd1", "#d1352b", "#1e9e4a", "#e07b00", "#8a4fd3", "#0a9bb0", "#c2388f", "#6b7a00",
          "#5b6b84", "#a0522d", "#2b50a8", "#b8860b", "#008c7a", "#7b3fa0", "#c0392b", "#3c8d2f"],
  dark:  ["#5aa9ff", "#ff6b5e", "#4fd67d", "#ffb13d", "#b48cff", "#3fd4e8", "#ff7cc8", "#c8d44a",
          "#a9b8cf", "#e09a6a", "#7f9dff", "#f2d16b", "#3fe0c5", "#d39bff", "#ff8f80", "#8ee07a"],
};

// ------------------------------------------------------------------ state
const params = new URLSearchParams(location.search);
const state = {
  protocol: PROTOCOL_VERSION,
  conn: "connecting",
  attempt: 0,
  connects: 0,
  session: null,
  server: null,
  heartbeatS: null,
  paused: false,
  pausedAt: null,
  windowS: 30,
  clockOffset: null,      // server time - local time, from live batch timestamps
  errors: [],             // last server `error` messages
  helloStreams: [],       // stream ids in the latest hello
  bus: null,              // {up} from a server with a bus (--bus), else null
};
const streams = new Map();   // stream id -> StreamView
const byKey = new Map();     // key (this session) -> StreamView
const stats = {
  frames: 0,              // requestAnimationFrame callbacks
  framesDrawn: 0,         // frames in which at least one chart was redrawn
  chartsDrawn: 0,
  pointsDrawn: 0,         // path vertices handed to the canvas
  batches: 0, replayedBatches: 0, duplicates: 0, badFrames: 0,
  samples: 0, bytes: 0,
  frameTimes: [],         // rAF deltas, ms (last STAT_KEEP)
  drawTimes: [],          // time spent drawing per drawn frame, ms
  domTimes: [],
};
let theme = null;
let conn = null;
let timeline = null;   // playback controls, shown when the server is a replay (timeline.js)
let refCounter = 0;
const access = new AccessProbe(() => updateConnUi());   // "needs a token" instead of endless reconnecting

function pushBounded(arr, v) {
  arr.push(v);
  if (arr.length > 2 * STAT_KEEP) arr.splice(0, arr.length - STAT_KEEP);
}
const localNow = () => (performance.timeOrigin + performance.now()) / 1000;

// Server clock estimate: the newest live timestamp seen recently, relative to local
// time. It rises at once and falls slowly, so the view never jumps backwards.
const clock = { target: -Infinity, bucket: 0, cur: -Infinity, prev: -Infinity, lastUpdate: 0 };
function noteLive(tLast) {
  const d = tLast - localNow();
  const b = Math.floor(performance.now() / 1000);
  if (b !== clock.bucket) { clock.prev = b === clock.bucket + 1 ? clock.cur : -Infinity; clock.cur = -Infinity; clock.bucket = b; }
  if (d > clock.cur) clock.cur = d;
  clock.target = Math.max(clock.cur, clock.prev);
  if (state.clockOffset === null || clock.target > state.clockOffset) state.clockOffset = clock.target;
}
function updateClock(nowMs) {
  const dt = clock.lastUpdate ? (nowMs - clock.lastUpdate) / 1000 : 0;
  clock.lastUpdate = nowMs;
  if (state.clockOffset !== null && clock.target > -Infinity && clock.target < state.clockOffset) {
    state.clockOffset = Math.max(clock.target, state.clockOffset - 0.1 * dt);
  }
}
/** Time jumped (a replay was sought, paused, sped up): learn the server's clock afresh. */
function resetClock() {
  Object.assign(clock, { target: -Infinity, cur: -Infinity, prev: -Infinity });
  state.clockOffset = null;
}
function viewEnd() {
  return state.paused ? state.pausedAt : localNow() + (state.clockOffset ?? 0);
}

// ------------------------------------------------------------------ theme
const darkQuery = matchMedia("(prefers-color-scheme: dark)");
function readTheme() {
  const cs = getComputedStyle(document.documentElement);
  const v = (n) => cs.getPropertyValue(n).trim();
  theme = {
    scheme: darkQuery.matches ? "dark" : "light",
    bg: v("--card"), fg: v("--fg"), muted: v("--muted"), grid: v("--grid"), axis: v("--axis"), gap: v("--gap"),
    palette: PALETTES[darkQuery.matches ? "dark" : "light"],
  };
  for (const sv of streams.values()) { sv.chart.dirty = true; sv.paintSwatches(); }
}

// ------------------------------------------------------------------ DOM helpers
const $ = (sel) => document.querySelector(sel);

function ageText(seconds) {
  if (!(seconds >= 0)) return "no data yet";
  if (seconds < 1) return "just now";
  if (seconds < 90) return `${seconds.toFixed(0)} s ago`;
  if (seconds < 5400) return `${(seconds / 60).toFixed(0)} min ago`;
  return `${(seconds / 3600).toFixed(1)} h ago`;
}

// ------------------------------------------------------------------ one stream
class StreamView {
  constructor(info) {
    this.id = info.id;
    this.key = info.key;
    this.info = info;
    this.channels = info.channels.map((c) => ({ name: String(c.name), unit: String(c.unit ?? "") }));
    this.rateHz = info.rate_hz > 0 ? info.rate_hz : null;
    this.series = new Series(Math.max(1, this.channels.length), capacityFor(this.rateHz, this.channels.length));
    this.hidden = new Set();
    this.yMode = "auto";
    this.yFixed = [0, 1];
    this.split = null;          // one lane per channel? null: not decided yet (the chart decides from the data)
    this.splitByUser = false;   // the Split button was used: no more automatic decisions
    this.lastSeq = null;        // seq of the last batch drawn (in epoch seqEpoch)
    this.seqEpoch = "";         // the stream's epoch that lastSeq belongs to (resume.js)
    this.seqLost = 0;           // batches lost, from seq jumps
    this.announced = 0;         // batches the server said it dropped, not yet seen as a seq jump
    this.gapCount = 0;
    this.pendingGap = false;
    this.resync = true;         // first batch after a (re)connect: match it against what we hold
    this.outages = 0;
    this.lastBatchAt = null;    // performance.now() of the last live batch
    this.latest = null;         // last value per channel
    this.latestT = NaN;
    this.frozenT = null;   // newest sample time when the view was paused (null: live)
    this.latestSeq = null;
    this.recent = new Map();    // seq -> {t, values} (bounded)
    this.subscribed = false;
    this.shownText = {};
    this.build();
  }

  get drops() { return this.seqLost + this.announced; }

  build() {
    const id = this.id;
    this.statusEl = h("span", { class: "badge", "data-testid": "status" });
    this.ageEl = h("span", { class: "age", "data-testid": "age" });
    this.dropsEl = h("span", { class: "drops", "data-testid": "drops", title: "batches lost (server drops and sequence gaps)" });
    this.yModeBtn = h("button", { class: "tool", "data-testid": "y-mode", title: "Y axis: autoscale or fixed range", onclick: () => this.toggleY() }, "Y auto");
    this.yMinEl = h("input", { type: "number", step: "any", "data-testid": "y-min", "aria-label": "Y minimum", onchange: () => this.readY() });
    this.yMaxEl = h("input", { type: "number", step: "any", "data-testid": "y-max", "aria-label": "Y maximum", onchange: () => this.readY() });
    this.yFixEl = h("span", { class: "yfix", hidden: true }, this.yMinEl, h("span", { text: "–" }), this.yMaxEl);
    this.splitBtn = h("button", { class: "tool", "data-testid": "split", "aria-pressed": "false",
      title: "Split: each channel in its own lane with its own Y axis", onclick: () => this.setSplit(!this.split, true) }, "Split");
    const csvBtn = h("button", { class: "tool", "data-testid": "export-csv", title: "Download the chart's data as CSV", onclick: () => this.download() }, "CSV");
    this.canvas = h("canvas", { "data-testid": "chart", role: "img", "aria-label": `Live chart of ${id}` });
    this.tip = h("div", { class: "tip", "data-testid": "tooltip", hidden: true });
    this.plot = h("div", { class: "plot" }, this.canvas, this.tip);
    this.legend = h("ul", { class: "legend", "data-testid": "legend" });
    this.commands = new CommandPanel(id, (msg) => sendCommand(this, msg));
    this.el = h("article", { class: "card", "data-testid": `stream-${id}`, "data-stream": id },
      h("header", { class: "card-head" },
        h("h3", { text: id, title: id }),
        this.statusEl, this.ageEl, this.dropsEl,
        h("span", { class: "tools" }, this.yFixEl, this.yModeBtn, this.splitBtn, csvBtn)),
      this.plot, this.legend, this.commands.el);
    this.commands.setInfo(this.info);
    this.chart = new Chart(this.canvas, this);
    this.buildLegend();
    this.views = attachViews(this, appCtx);   // Spectrum, XY, Gauge, zoom, layout (views/)
    this.canvas.addEventListener("pointermove", (ev) => { this.chart.hoverX = ev.offsetX; this.chart.dirty = true; });
    this.canvas.addEventListener("pointerleave", () => { this.chart.hoverX = null; this.chart.dirty = true; this.tip.hidden = true; });
    resizeObs.observe(this.plot);
    visObs.observe(this.plot);
    this.update();
  }

  buildLegend() {
    this.legend.textContent = "";
    this.valueEls = [];
    this.swatches = [];
    this.channels.forEach((ch, c) => {
      const sw = h("span", { class: "sw" });
      const val = h("span", { class: "val", "data-testid": `latest-${ch.name}` }, "–");
      const btn = h("button", {
        class: "ch", "aria-pressed": String(!this.hidden.has(c)), title: `Show/hide ${ch.name}`,
        onclick: () => this.toggleChannel(c, btn),
      }, sw, h("span", { class: "name", text: ch.name }), ch.unit ? h("span", { class: "unit", text: `(${ch.unit})` }) : null, val);
      this.legend.append(h("li", { "data-testid": `legend-${ch.name}`, "data-channel": ch.name }, btn));
      this.valueEls.push(val);
      this.swatches.push(sw);
    });
    this.shownText = {};
    this.paintSwatches();
    this.views?.legendBuilt();
  }

  paintSwatches() {
    if (!theme) return;
    this.swatches.forEach((sw, c) => sw.style.setProperty("--sw", theme.palette[c % theme.palette.length]));
  }

  toggleChannel(c, btn) {
    if (this.hidden.has(c)) this.hidden.delete(c); else this.hidden.add(c);
    btn.setAttribute("aria-pressed", String(!this.hidden.has(c)));
    btn.parentElement.classList.toggle("off", this.hidden.has(c));
    this.chart.dirty = true;
    this.splitDecided();
    this.views?.changed();
  }

  /** Split into lanes (or not); byUser: the Split button, which ends automatic decisions. */
  setSplit(on, byUser = false) {
    if (byUser) this.splitByUser = true;
    this.split = !!on;
    this.chart.dirty = true;
    this.splitDecided();
  }

  /** The split state changed (by the user, or decided by the chart): button, Y controls, plot height. */
  splitDecided() {
    const on = this.split === true;
    this.splitBtn.setAttribute("aria-pressed", String(on));
    this.yModeBtn.disabled = on;
    this.yModeBtn.title = on ? "Split lanes always autoscale" : "Y axis: autoscale or fixed range";
    this.yFixEl.hidden = on || this.yMode === "auto";
    const lanes = this.channels.length - this.hidden.size;
    const minH = on && lanes > 1 ? `${lanes * (LANE_MIN_PX + LANE_GAP) + 24}px` : "";
    if (this.plot.style.minHeight !== minH) this.plot.style.minHeight = minH;
  }

  toggleY() {
    if (this.yMode === "auto") {
      this.yMode = "fixed";
      this.yFixed = this.chart.yRange.slice();
      this.yMinEl.value = +this.yFixed[0].toPrecision(6);
      this.yMaxEl.value = +this.yFixed[1].toPrecision(6);
    } else {
      this.yMode = "auto";
    }
    this.yModeBtn.textContent = this.yMode === "auto" ? "Y auto" : "Y fixed";
    this.yModeBtn.setAttribute("aria-pressed", String(this.yMode === "fixed"));
    this.yFixEl.hidden = this.yMode === "auto";
    this.chart.dirty = true;
  }

  readY() {
    const a = parseFloat(this.yMinEl.value), b = parseFloat(this.yMaxEl.value);
    if (Number.isFinite(a) && Number.isFinite(b) && b > a) { this.yFixed = [a, b]; this.chart.dirty = true; }
  }

  setInfo(info) {
    if (this.key !== info.key) {
      // Keys are per connection: another stream may hold our old key by now.
      if (byKey.get(this.key) === this) byKey.delete(this.key);
      this.key = info.key;
    }
    noteEpoch(this, info.epoch);
    this.info = info;
    this.commands.setInfo(info);
    this.rateHz = info.rate_hz > 0 ? info.rate_hz : this.rateHz;
    const chans = info.channels.map((c) => ({ name: String(c.name), unit: String(c.unit ?? "") }));
    const changed = chans.length !== this.channels.length || chans.some((c, i) => c.name !== this.channels[i].name || c.unit !== this.channels[i].unit);
    if (changed) {
      this.channels = chans;
      if (chans.length > this.series.nch) this.series = this.series.resized(chans.length, capacityFor(this.rateHz, chans.length));
      this.buildLegend();
      if (!this.splitByUser) this.split = null;   // new channels: decide again
      this.splitDecided();
    }
    this.chart.dirty = true;
    this.update();
  }

  /**
   * Take one decoded batch: dedupe by seq, mark gaps, append to the ring.
   * Within a connection seq must rise by exactly one; a jump is lost batches.
   * The first batches after a (re)connect are matched against what we already
   * hold: seq+1 continues seamlessly, older seqs already held are duplicates of
   * the history refill, anything else (server restarted: seq starts again; or
   * an outage longer than the server's history) is an outage gap.
   */
  ingest(b) {
    stats.batches++;
    if (b.replayed) stats.replayedBatches++;
    let gap = false;
    const tl = this.series.tLast;
    if (this.lastSeq !== null && this.resync) {
      if (b.seq <= this.lastSeq && !(b.N && b.ts[b.N - 1] > tl)) { stats.duplicates++; return; }
      if (b.seq !== this.lastSeq + 1) { gap = true; this.outages++; }
      this.resync = false;
    } else if (this.lastSeq !== null) {
      if (b.seq <= this.lastSeq) { stats.duplicates++; return; }
      if (b.seq > this.lastSeq + 1) {
        const lost = b.seq - this.lastSeq - 1;
        this.announced -= Math.min(this.announced, lost);
        this.seqLost += lost;
        gap = true;
      }
    }
    this.resync = false;
    this.lastSeq = b.seq;
    this.seqEpoch = this.info.epoch ?? "";
    if (b.N === 0) return;
    if (b.C > this.series.nch) {
      for (let c = this.channels.length; c < b.C; c++) this.channels.push({ name: `ch${c}`, unit: "" });
      this.series = this.series.resized(b.C, capacityFor(this.rateHz, b.C));
      this.buildLegend();
      if (!this.splitByUser) this.split = null;
      this.splitDecided();
    }
    const s = this.series;
    let from = 0;
    if (tl === tl) while (from < b.N && b.ts[from] <= tl) from++;   // keep time strictly increasing
    if (from < b.N) {
      if ((gap || this.pendingGap) && tl === tl) { s.addGap(tl, b.ts[from]); this.gapCount++; }
      this.pendingGap = false;
      if (s.len + (b.N - from) > s.cap) this.maybeGrow();
      this.series.push(b.ts, b.vals, b.C, b.N, from);
      stats.samples += b.N - from;
    }
    const n = b.N, latest = new Array(b.C);
    for (let c = 0; c < b.C; c++) latest[c] = b.vals[c * n + n - 1];
    this.latest = latest;
    this.latestT = b.ts[n - 1];
    this.latestSeq = b.seq;
    this.recent.set(b.seq, { t: b.ts[n - 1], values: latest, n, replayed: b.replayed });
    if (this.recent.size > RECENT_SEQS) this.recent.delete(this.recent.keys().next().value);
    if (!b.replayed) { this.lastBatchAt = performance.now(); noteLive(b.ts[n - 1]); }
  }

  /** The ring is full before holding MAX_WINDOW_S: the real rate is above the announced one. */
  maybeGrow() {
    const s = this.series;
    const span = s.tLast - s.tFirst;
    if (!(span > 0) || s.len < 64 || span >= MAX_WINDOW_S) return;
    const cap = capacityFor(s.len / span, s.nch);
    if (cap > s.cap) this.series = s.resized(s.nch, cap);
  }

  csv(opts = {}) {
    const v = this.chart.view;
    // While paused, data keeps arriving, and some of it is older than the paused
    // view's right edge (it was in flight). Export what the stream held at the
    // moment of the pause, so two exports of one paused view are the same file.
    const tEnd = this.frozenT == null ? v.tEnd : Math.min(v.tEnd, this.frozenT);
    return opts.all ? seriesToCsv(this.series, this.channels) : seriesToCsv(this.series, this.channels, v.tStart, tEnd);
  }

  /** The window on screen as CSV: from the server's history at full rate (GET /export),
   *  or, if that fails (an older server), from the samples this page holds. */
  download() {
    const stamp = new Date().toISOString().replace(/[:.]/g, "-");
    const name = `sensorstream-${this.id.replace(/[^\w.-]+/g, "_")}-${stamp}.csv`;
    const v = this.chart.view;
    const tEnd = this.frozenT == null ? v.tEnd : Math.min(v.tEnd, this.frozenT);
    const local = this.csv();
    fetch(exportUrl(this.id, v.tStart, tEnd))
      .then((r) => (r.ok ? r.text() : Promise.reject(new Error(`HTTP ${r.status}`))))
      .then((text) => downloadText(text, name), () => downloadText(local, name));
  }

  /** Text parts of the card, at DOM_UPDATE_MS. Writes only what changed. */
  update() {
    const set = (el, key, text) => { if (this.shownText[key] !== text) { this.shownText[key] = text; el.textContent = text; } };
    let age = NaN;
    if (this.lastBatchAt !== null) age = (performance.now() - this.lastBatchAt) / 1000;
    else if (this.series.len) age = viewEnd() - this.series.tLast;
    const badge = streamBadge(this.info, { connected: state.conn === "connected", ageS: age });
    if (this.el.dataset.status !== badge.status) { this.el.dataset.status = badge.status; this.statusEl.className = `badge ${badge.status}`; }
    set(this.statusEl, "status", badge.text);
    if (this.statusEl.title !== badge.title) this.statusEl.title = badge.title;
    set(this.ageEl, "age", ageText(age));
    const d = this.drops;
    set(this.dropsEl, "drops", d ? `${d} dropped` : this.gapCount ? `${this.gapCount} gap${this.gapCount > 1 ? "s" : ""}` : "");
    this.dropsEl.hidden = !(d || this.gapCount);
    if (this.latest) {
      for (let c = 0; c < this.valueEls.length; c++) set(this.valueEls[c], `v${c}`, formatValue(this.latest[c]));
    }
    this.views?.update(viewEnd(), state.windowS, theme);
  }

  updateTip() {
    const hv = this.chart.hover;
    if (!hv || this.chart.hoverX === null) { this.tip.hidden = true; return; }
    const rows = [h("div", { class: "tip-time", text: `${clockLabel(hv.t, 1)}.${String(Math.floor((hv.t % 1) * 1000)).padStart(3, "0")}` })];
    this.channels.forEach((ch, c) => {
      if (this.hidden.has(c)) return;
      const sw = h("span", { class: "sw" });
      sw.style.setProperty("--sw", theme.palette[c % theme.palette.length]);
      rows.push(h("div", { "data-channel": ch.name }, sw, `${ch.name} `, h("b", { text: formatValue(hv.values[c]) }), ch.unit ? ` ${ch.unit}` : ""));
    });
    this.tip.replaceChildren(...rows);
    this.tip.hidden = false;
    const w = this.plot.clientWidth, x = this.chart.hoverX;
    this.tip.style.left = x > w / 2 ? "" : `${x + 14}px`;
    this.tip.style.right = x > w / 2 ? `${w - x + 14}px` : "";
  }

  destroy() {
    this.views?.destroy();
    resizeObs.unobserve(this.plot);
    visObs.unobserve(this.plot);
    this.el.remove();
  }

  snapshot() {
    const s = this.series;
    return {
      id: this.id, key: this.key, device: this.info.device, status: this.info.status,
      channels: this.channels, rateHz: this.rateHz, len: s.len, capacity: s.cap, bytes: s.bytes,
      tFirst: s.tFirst, tLast: s.tLast, lastSeq: this.lastSeq, drops: this.drops, seqLost: this.seqLost, outages: this.outages,
      gaps: s.gaps.map((g) => [g.t0, g.t1]), latest: this.latest, latestT: this.latestT, latestSeq: this.latestSeq,
      hidden: [...this.hidden], yMode: this.yMode, yRange: this.chart.yRange, view: { ...this.chart.view },
      split: this.split, splitByUser: this.splitByUser,
      lanes: this.chart.lanes.map((ln) => ({ channels: ln.chans.map((c) => this.channels[c]?.name), top: ln.top, height: ln.h, yRange: [ln.y0, ln.y1] })),
      subscribed: this.subscribed, commands: this.commands.snapshot(),
    };
  }
}

// ------------------------------------------------------------------ layout observers
const resizeObs = new ResizeObserver((entries) => {
  for (const e of entries) {
    const sv = [...streams.values()].find((x) => x.plot === e.target);
    if (sv) sv.chart.resize(e.contentRect.width, e.contentRect.height, window.devicePixelRatio || 1);
  }
});
const visObs = new IntersectionObserver((entries) => {
  for (const e of entries) {
    const sv = [...streams.values()].find((x) => x.plot === e.target);
    if (sv) { sv.chart.visible = e.isIntersecting; if (e.isIntersecting) sv.chart.dirty = true; }
  }
}, { rootMargin: "200px" });

function deviceSection(device) {
  const main = $("#devices");
  let sec = main.querySelector(`section.device[data-device="${CSS.escape(device)}"]`);
  if (!sec) {
    sec = h("section", { class: "device", "data-device": device, "data-testid": `device-${device}` },
      h("h2", { text: device }), h("div", { class: "cards" }));
    const after = [...main.querySelectorAll("section.device")].find((s) => s.dataset.device > device);
    main.insertBefore(sec, after ?? null);
  }
  return sec;
}

function placeCard(sv) {
  const device = sv.info.device || sv.id.split("/")[0];
  const cards = deviceSection(device).querySelector(".cards");
  if (sv.el.parentElement === cards) return;
  const old = sv.el.parentElement?.closest("section.device");
  const after = [...cards.children].find((c) => c.dataset.stream > sv.id);
  cards.insertBefore(sv.el, after ?? null);
  if (old && !old.querySelector(".card")) old.remove();
  $("#empty").hidden = true;
}

function exportUrl(id, from, to) {
  const u = new URL("export", location.href);
  u.search = "";
  u.searchParams.set("stream", id);
  u.searchParams.set("from", String(from));
  u.searchParams.set("to", String(to));
  u.searchParams.set("format", "csv");
  const token = params.get("token");
  if (token !== null) u.searchParams.set("token", token);
  return u.toString();
}

// ------------------------------------------------------------------ catalog + protocol
function upsertStream(info) {
  if (!info || typeof info.id !== "string" || !Array.isArray(info.channels)) return null;
  let sv = streams.get(info.id);
  if (!sv) {
    sv = new StreamView(info);
    streams.set(info.id, sv);
  } else {
    sv.setInfo(info);
  }
  byKey.set(info.key, sv);
  placeCard(sv);
  return sv;
}

function removeStream(sv) {
  const sec = sv.el.closest("section.device");
  sv.destroy();
  streams.delete(sv.id);
  if (byKey.get(sv.key) === sv) byKey.delete(sv.key);
  if (sec && !sec.querySelector(".card")) sec.remove();
  $("#empty").hidden = streams.size > 0;
}

function historyFor(sv) {
  // Enough history to refill the longest window, or to bridge an outage.
  if (!sv || !sv.series.len) return MAX_WINDOW_S;
  return Math.min(MAX_WINDOW_S, Math.max(1, viewEnd() - sv.series.tLast + 2));
}

const pendingSubs = new Map();   // ref -> {patterns, history}
function subscribe(patterns, history, resume = null) {
  const ref = `sub-${++refCounter}`;
  pendingSubs.set(ref, { patterns, history });
  const msg = { type: "subscribe", ref, streams: patterns, history_s: Math.round(history * 1000) / 1000, console: true };
  if (resume && Object.keys(resume).length) msg.resume = resume;   // streams seen before continue where they stopped
  conn.send(msg);
}

const commandRefs = new Map();   // ref -> StreamView of a command awaiting command_sent / error
function sendCommand(sv, msg) {
  const ref = `cmd-${++refCounter}`;
  if (!conn.send({ ...msg, ref })) return null;
  commandRefs.set(ref, sv);
  return ref;
}
function commandReply(msg) {
  const sv = commandRefs.get(msg.ref);
  if (!sv) return false;
  commandRefs.delete(msg.ref);
  return sv.commands.reply(msg);
}

function onHello(msg) {
  state.session = msg.session ?? null;
  state.server = msg.server ?? null;
  state.heartbeatS = conn.heartbeatS;
  state.connects = conn.connects;
  byKey.clear();
  const points = resumePoints(streams.values());   // before the hello's epochs are applied
  state.bus = msg.bus ?? null;
  state.helloStreams = (Array.isArray(msg.streams) ? msg.streams : []).map((x) => x && x.id);
  const ids = new Set();
  for (const info of Array.isArray(msg.streams) ? msg.streams : []) {
    const sv = upsertStream(info);
    if (sv) ids.add(sv.id);
  }
  for (const sv of [...streams.values()]) if (!ids.has(sv.id)) removeStream(sv);
  let history = 0;
  for (const sv of streams.values()) {
    sv.subscribed = false;
    sv.resync = true;
    history = Math.max(history, historyFor(sv));
  }
  if (!streams.size) history = MAX_WINDOW_S;
  pendingSubs.clear();
  commandRefs.clear();   // commands of the old connection get no answer now
  for (const sv of streams.values()) sv.commands.pending.clear();
  subscribe(["*"], history, points);
  $("#empty").textContent = streams.size ? "" : NO_SOURCES;
  access.connected();
  $("#empty").hidden = streams.size > 0;
  $("#session").textContent = `${state.server ?? "server"} · session ${state.session ?? "?"}`;
  timeline.onHello();
}

function onText(msg) {
  if (timeline.onText(msg)) return;
  switch (msg.type) {
    case "stream": {
      const known = msg.stream && streams.has(msg.stream.id);
      const sv = upsertStream(msg.stream);
      if (sv && !known) subscribe([sv.id], MAX_WINDOW_S);
      break;
    }
    case "stream_removed": {
      const sv = byKey.get(msg.key);
      if (sv) removeStream(sv);
      break;
    }
    case "subscribed":
      pendingSubs.delete(msg.ref);
      applyResumed(msg.resumed, streams);
      for (const k of Array.isArray(msg.keys) ? msg.keys : []) { const sv = byKey.get(k); if (sv) sv.subscribed = true; }
      break;
    case "unsubscribed":
      for (const k of Array.isArray(msg.keys) ? msg.keys : []) { const sv = byKey.get(k); if (sv) sv.subscribed = false; }
      break;
    case "dropped": {
      const sv = byKey.get(msg.key);
      if (sv && msg.batches > 0) { sv.announced += msg.batches; sv.pendingGap = true; }
      break;
    }
    case "bus":
      state.bus = { up: msg.up === true };
      showNotice(msg.up ? "Data bus back: streams resume." : "Data bus (Redis) unreachable: remote streams are paused.");
      break;
    case "alert": {   // server-side limits (docs/alerts.md): the list, chart bands, gauge colours
      onAlert(msg);
      const sv = byKey.get(msg.key);
      if (sv) sv.chart.dirty = true;
      break;
    }
    case "console": byKey.get(msg.key)?.commands.console(msg); break;
    case "command_sent": commandReply(msg); break;
    case "error": {
      if (commandReply(msg)) break;   // shown next to its send box
      state.errors.push({ ref: msg.ref, code: msg.code, message: msg.message, at: Date.now() });
      if (state.errors.length > 20) state.errors.shift();
      const sub = pendingSubs.get(msg.ref);
      if (sub) {  // a subscribe the server refused: try once more with the default history
        pendingSubs.delete(msg.ref);
        if (sub.history > 60) subscribe(sub.patterns, 60);
      }
      showNotice(`Server error ${msg.code ?? ""}: ${msg.message ?? ""}`);
      break;
    }
    default:
      break;   // heartbeat, pong, and anything unknown: liveness already noted
  }
}

function onBinary(buf) {
  stats.bytes += buf.byteLength;
  let b;
  try { b = decodeBatch(buf); } catch { stats.badFrames++; return; }
  if (!b) return;
  const sv = byKey.get(b.key);
  if (sv) sv.ingest(b);
}

let noticeTimer = null;
function showNotice(text) {
  const el = $("#notice");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { el.hidden = true; }, 6000);
}

// ------------------------------------------------------------------ header UI
function updateConnUi() {
  const el = $("#conn");
  const c = conn;
  state.conn = c.state;
  state.attempt = c.attempt;
  el.dataset.state = c.state;
  let text;
  if (c.state === "connected") text = "Connected";
  else if (c.state === "connecting") text = "Connecting…";
  else if (c.state === "reconnecting") text = `Reconnecting (attempt ${c.attempt})`;
  else {
    const wait = Math.max(0, (c.nextRetryAt - performance.now()) / 1000);
    text = `Disconnected — retry ${c.attempt}${c.ws ? " in progress" : ` in ${wait.toFixed(0)} s`}`;
  }
  const refused = accessText(access.problem);
  if (refused && c.state !== "connected") { text = refused; el.dataset.state = "unauthorized"; }
  const t = $("#conn-text");
  if (t.textContent !== text) t.textContent = text;
  $("#retry").hidden = c.state !== "disconnected";
}

function setWindow(seconds) {
  if (!WINDOWS.some(([s]) => s === seconds)) return false;
  state.windowS = seconds;
  for (const b of document.querySelectorAll("#window button")) b.setAttribute("aria-checked", String(+b.dataset.window === seconds));
  for (const sv of streams.values()) sv.chart.dirty = true;
  try { localStorage.setItem("sensorstream.window", String(seconds)); } catch { /* storage off */ }
  layout.setWindow(seconds);
  return true;
}

function setPaused(paused) {
  if (paused === state.paused) return;
  if (paused) { state.pausedAt = viewEnd(); state.paused = true; }
  else { state.paused = false; state.pausedAt = null; }
  for (const sv of streams.values()) {
    sv.frozenT = paused ? sv.series.tLast : null;
    if (!paused && sv.zoom) { sv.zoom = null; sv.views?.changed(); }   // live again: the time zoom ends
  }
  const b = $("#pause");
  b.textContent = paused ? "Resume" : "Pause";
  b.setAttribute("aria-pressed", String(paused));
  document.body.classList.toggle("paused", paused);
  for (const sv of streams.values()) sv.chart.dirty = true;
}

function buildHeader() {
  const seg = $("#window");
  for (const [s, label] of WINDOWS) {
    seg.append(h("button", { role: "radio", "aria-checked": "false", "data-window": s, "data-testid": `window-${s}`, onclick: () => setWindow(s) }, label));
  }
  let saved = NaN;
  try { saved = +localStorage.getItem("sensorstream.window"); } catch { /* storage off */ }
  const fromUrl = +params.get("window");
  setWindow(WINDOWS.some(([s]) => s === fromUrl) ? fromUrl : WINDOWS.some(([s]) => s === saved) ? saved : 30);
  $("#pause").addEventListener("click", () => setPaused(!state.paused));
  $("#retry").addEventListener("click", () => conn.retryNow());
  document.addEventListener("keydown", (ev) => {
    if (ev.target instanceof HTMLInputElement) return;
    if (ev.key === " " || ev.key === "p") { ev.preventDefault(); setPaused(!state.paused); }
  });
}

// ------------------------------------------------------------------ render loop
let lastFrame = 0;
let lastDom = 0;
function tick(now) {
  requestAnimationFrame(tick);
  stats.frames++;
  if (lastFrame) pushBounded(stats.frameTimes, now - lastFrame);
  lastFrame = now;
  updateClock(now);
  const tEnd = viewEnd();
  const t0 = performance.now();
  let drew = 0;
  for (const sv of streams.values()) {
    const ch = sv.chart, [te, ws] = spanOf(sv, tEnd, state.windowS);   // a zoom (views/index.js) replaces the window
    if (ch.needsDraw(te, ws, state.paused)) {
      ch.draw(te, ws, theme, stats);
      if (ch.hoverX !== null) sv.updateTip();
      drew++;
    }
    drew += sv.views.frame(now, tEnd, state.windowS, theme);
  }
  if (drew) { stats.framesDrawn++; pushBounded(stats.drawTimes, performance.now() - t0); }
  if (now - lastDom >= DOM_UPDATE_MS) {
    lastDom = now;
    const d0 = performance.now();
    updateConnUi();
    timeline.update();
    for (const sv of streams.values()) sv.update();
    renderAlertPanel(formatValue);
    pushBounded(stats.domTimes, performance.now() - d0);
  }
}

// ------------------------------------------------------------------ hooks for tests and devtools
function need(id) {
  const sv = streams.get(id);
  if (!sv) throw new Error(`no stream ${id}`);
  return sv;
}
window.sensorstream = {
  state, stats, streams, access,
  get conn() { return conn; },
  ids: () => [...streams.keys()],
  snapshot: (id) => (id === undefined ? [...streams.values()].map((sv) => sv.snapshot()) : need(id).snapshot()),
  recent: (id, seq) => need(id).recent.get(seq) ?? null,
  exportCsv: (id, opts) => need(id).csv(opts),
  sampleAt: (id, t) => need(id).chart.sampleAt(t),
  setWindow, pause: () => setPaused(true), resume: () => setPaused(false),
  setSplit: (id, on) => need(id).setSplit(on, true),
  setHidden: (id, channel, hidden) => {
    const sv = need(id), c = sv.channels.findIndex((ch) => ch.name === channel);
    if (c >= 0 && sv.hidden.has(c) !== hidden) sv.toggleChannel(c, sv.legend.children[c].firstChild);
  },
  views: (id) => need(id).views.snapshot(),
  setViews: (id, kinds) => need(id).views.setKinds(kinds),
  resetZoom: (id) => need(id).views.resetZoom(),
  alerts: () => alertsSnapshot(),
  spectrumStats,
  setLimit,
  layout: () => { layout.flush(); return layout.all(); },
  playbackPosition: () => timeline.position(),
  playbackChecked: () => timeline.checked,
  bufferBytes: () => [...streams.values()].reduce((a, sv) => a + sv.series.bytes, 0),
  resetStats: () => {
    Object.assign(stats, { frames: 0, framesDrawn: 0, chartsDrawn: 0, pointsDrawn: 0, frameTimes: [], drawTimes: [], domTimes: [] });
    lastFrame = 0;
  },
};

// What the views (views/index.js) may do to the page.
const appCtx = {
  state,
  pause: () => setPaused(true),
  pauseAt: (t) => { setPaused(true); state.pausedAt = t; },
};

// ------------------------------------------------------------------ start
function main() {
  mountAlertPanel($("#devices"));
  readTheme();
  darkQuery.addEventListener("change", readTheme);
  buildHeader();
  timeline = new Timeline($("#timeline"), { send: (m) => conn.send(m), onJump: resetClock, setViewPaused: setPaused });
  conn = new Connection(wsUrl(), {
    onHello, onText, onBinary,
    onState: (st, c) => {
      if (st !== "connected" && !c.gotHello) access.failed();   // refused before its hello: a token?
      updateConnUi();
    },
  });
  window.sensorstream.url = conn.url;
  conn.start();
  requestAnimationFrame(tick);
}

main();
