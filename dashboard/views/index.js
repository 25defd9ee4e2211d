// The views of one stream card, and what the Time view gains beyond app.js's chart:
//
// - a view bar (Time, Spectrum, XY, Gauge): any combination, stacked in the card;
// - Time: drag to zoom the time axis (pauses the view), wheel or pinch on a lane's
//   Y axis, double-click to reset; per-channel min / max / mean / RMS over the
//   visible window in the legend; alert bands and limit lines drawn over the chart;
// - the layout (views, hidden channels, zoom, XY channels, spectrum scale, window)
//   kept in the URL and in localStorage.
//
// app.js calls: attachViews(sv, app) once per card, then views.frame() per
// animation frame, views.update() at the text rate, views.legendBuilt() and
// views.changed() when the legend or the hidden channels change.
import { formatValue } from "../chart.js";
import { h } from "./util.js";
import { SpectrumView } from "./spectrum.js";
import { XYView } from "./xy.js";
import { GaugeView } from "./gauge.js";
import { bandsOf, checkLimits, limitOf, serverLimitsOf } from "./alerts.js";
import * as layout from "./layout.js";

export const VIEW_KINDS = [["time", "Time"], ["spectrum", "Spectrum"], ["xy", "XY"], ["gauge", "Gauge"]];

/** The time axis a stream shows: its zoom if it has one, else the page's window ending at tEnd. */
export function spanOf(sv, tEnd, windowS) {
  return sv.zoom ? [sv.zoom[1], sv.zoom[1] - sv.zoom[0]] : [tEnd, windowS];
}

const STATS_EVERY_MS = 500;
const BAND_FILL = {
  light: { critical: "rgba(209, 53, 43, 0.16)", warning: "rgba(199, 119, 0, 0.16)" },
  dark: { critical: "rgba(255, 107, 94, 0.20)", warning: "rgba(255, 177, 61, 0.18)" },
};
const STATS_MAX_SAMPLES = 50_000;   // per channel; beyond, mean and RMS come from an even subsample

export function attachViews(sv, app) {
  return new CardViews(sv, app);
}

class CardViews {
  constructor(sv, app) {
    this.sv = sv;
    this.app = app;
    const saved = layout.get(sv.id);
    this.kinds = new Set((saved.views ?? ["time"]).filter((k) => VIEW_KINDS.some(([v]) => v === k)));
    if (!this.kinds.size) this.kinds.add("time");
    this.opts = { spectrum: saved.spectrum ?? {}, xy: saved.xy ?? {} };
    this.views = new Map();       // kind -> view object (not time)
    this.limitState = { lastChecked: new Map() };
    this.statsAt = 0;
    this.restoring = true;
    this.buttons = new Map();
    const bar = h("span", { class: "seg view-seg", role: "group", "aria-label": "Views", "data-testid": "views" },
      ...VIEW_KINDS.map(([k, label]) => {
        const b = h("button", { class: "tool", "data-testid": `view-${k}`, "aria-pressed": "false", title: `${label} view (combine several)`,
          onclick: () => this.toggle(k) }, label);
        this.buttons.set(k, b);
        return b;
      }));
    sv.el.querySelector(".card-head .tools").prepend(bar);
    this.stack = h("div", { class: "view-stack" });
    sv.legend.after(this.stack);
    // hidden channels and zoom from the saved layout
    sv.zoom = Array.isArray(saved.zoom) && saved.zoom.length === 2 && saved.zoom[1] > saved.zoom[0] ? saved.zoom : null;
    sv.yZoom = saved.yzoom && typeof saved.yzoom === "object" ? { ...saved.yzoom } : null;
    this.savedHidden = new Set(Array.isArray(saved.hidden) ? saved.hidden : []);
    if (sv.zoom) app.pauseAt(sv.zoom[1]);
    sv.decorate = (ctx, L, lanes, theme) => this.decorate(ctx, L, lanes, theme);
    this.zoomBadge = h("button", { class: "tool zoom-badge", "data-testid": "zoom-badge", hidden: true, title: "Zoomed: click (or double-click the chart) to reset",
      onclick: () => this.resetZoom() }, "zoomed ×");
    sv.el.querySelector(".card-head .tools").prepend(this.zoomBadge);
    this.selection = h("div", { class: "zoom-sel", hidden: true });
    sv.plot.append(this.selection);
    this.bindZoom();
    this.apply();
    this.legendBuilt();
    this.restoring = false;
  }

  // ------------------------------------------------------------------ which views

  toggle(kind, on = !this.kinds.has(kind)) {
    if (!on && this.kinds.size === 1 && this.kinds.has(kind)) return;   // a card shows at least one view
    if (on) this.kinds.add(kind); else this.kinds.delete(kind);
    this.apply();
    this.changed();
  }

  /** Exactly these views (tests, links). */
  setKinds(kinds) {
    const want = new Set(kinds.filter((k) => VIEW_KINDS.some(([v]) => v === k)));
    if (!want.size) return;
    this.kinds = want;
    this.apply();
    this.changed();
  }

  apply() {
    for (const [k, b] of this.buttons) b.setAttribute("aria-pressed", String(this.kinds.has(k)));
    const timeOn = this.kinds.has("time");
    this.sv.plot.hidden = !timeOn;
    this.sv.chart.visible = timeOn;
    this.sv.chart.dirty = true;
    for (const [k] of VIEW_KINDS) {
      if (k === "time") continue;
      let v = this.views.get(k);
      if (this.kinds.has(k) && !v) {
        v = k === "spectrum" ? new SpectrumView(this.sv, this, this.opts.spectrum) : k === "xy" ? new XYView(this.sv, this, this.opts.xy) : new GaugeView(this.sv, this);
        this.views.set(k, v);
      } else if (!this.kinds.has(k) && v) {
        v.destroy();
        this.views.delete(k);
        v.el.remove();
      }
    }
    // stacked in the bar's order
    this.stack.replaceChildren(...VIEW_KINDS.map(([k]) => this.views.get(k)?.el).filter(Boolean));
    this.sv.el.dataset.views = [...this.kinds].join(" ");
  }

  get state() { return this.app.state; }

  // ------------------------------------------------------------------ called by app.js

  legendBuilt() {
    // a saved layout hides channels by name, once they exist
    this.sv.channels.forEach((ch, c) => {
      if (this.savedHidden.has(ch.name) && !this.sv.hidden.has(c)) {
        this.savedHidden.delete(ch.name);
        this.sv.toggleChannel(c, this.sv.legend.children[c].firstChild);
      }
    });
    this.statEls = this.sv.channels.map((ch, c) => {
      const el = h("span", { class: "stats", "data-testid": `stats-${ch.name}` });
      this.sv.legend.children[c]?.append(el);
      return el;
    });
    this.statsAt = 0;
    for (const v of this.views.values()) v.channelsChanged?.();
  }

  /** Anything a layout holds changed: save it (debounced) to the URL and localStorage. */
  changed() {
    if (this.restoring) return;
    const sv = this.sv;
    const hidden = [...sv.hidden].map((c) => sv.channels[c]?.name).filter(Boolean);
    layout.set(sv.id, {
      views: [...this.kinds],
      hidden: [...hidden, ...this.savedHidden],
      zoom: sv.zoom ? sv.zoom.map((t) => +t.toFixed(3)) : undefined,
      yzoom: sv.yZoom && Object.keys(sv.yZoom).length ? sv.yZoom : undefined,
      spectrum: this.views.get("spectrum")?.state() ?? this.opts.spectrum,
      xy: this.views.get("xy")?.state() ?? this.opts.xy,
    }, this.app.state.windowS);
  }

  /** Per animation frame: the other views draw themselves when they need to. Returns views drawn. */
  frame(now, tEnd, windowS, theme) {
    let drew = 0;
    const [te, ws] = spanOf(this.sv, tEnd, windowS);
    for (const v of this.views.values()) if (v.frame(now, te, ws, theme)) drew++;
    return drew;
  }

  /** At the text rate: gauges, legend statistics, ad-hoc limits. */
  update(tEnd, windowS, theme) {
    const sv = this.sv;
    checkLimits(sv, this.limitState);
    const zoomed = !!(sv.zoom || (sv.yZoom && Object.keys(sv.yZoom).length));
    if (this.zoomBadge.hidden === zoomed) this.zoomBadge.hidden = !zoomed;
    const [te, ws] = spanOf(sv, tEnd, windowS);
    this.views.get("gauge")?.update(te, ws, theme);
    const now = performance.now();
    if (this.kinds.has("time") && now - this.statsAt >= STATS_EVERY_MS) { this.statsAt = now; this.legendStats(); }
  }

  /** min / max / mean / RMS of each visible channel over the chart's visible window. */
  legendStats() {
    const sv = this.sv, s = sv.series, v = sv.chart.view;
    if (!this.statEls || !(v.tEnd > v.tStart)) return;
    const i0 = s.lowerBound(v.tStart), i1 = s.lowerBound(v.tEnd + 1e-9), n = i1 - i0;
    const stride = Math.max(1, Math.ceil(n / STATS_MAX_SAMPLES));
    this.stats = [];
    for (let c = 0; c < sv.channels.length; c++) {
      const el = this.statEls[c];
      if (!el) continue;
      if (sv.hidden.has(c) || c >= s.nch || n <= 0) { el.textContent = ""; this.stats.push(null); continue; }
      let lo = Infinity, hi = -Infinity, sum = 0, sq = 0, k = 0;
      const arr = s.v[c];
      for (let i = i0; i < i1; i += stride) {
        const x = arr[s.phys(i)];
        if (x !== x) continue;
        sum += x; sq += x * x; k++;
        if (x < lo) lo = x; if (x > hi) hi = x;
      }
      // exact min/max from the chart's own reduction when it has one (every sample)
      if (stride > 1 && sv.chart.chLo.length > c && sv.chart.chLo[c] <= sv.chart.chHi[c]) { lo = sv.chart.chLo[c]; hi = sv.chart.chHi[c]; }
      const st = k ? { min: lo, max: hi, mean: sum / k, rms: Math.sqrt(sq / k), n: Math.ceil(n / stride) === k ? n : k } : null;
      this.stats.push(st);
      el.textContent = st ? `min ${formatValue(st.min)} max ${formatValue(st.max)} mean ${formatValue(st.mean)} rms ${formatValue(st.rms)}` : "";
    }
  }

  // ------------------------------------------------------------------ zoom

  bindZoom() {
    const sv = this.sv, canvas = sv.canvas, app = this.app;
    const pointers = new Map();
    let drag = null, pinch = null;
    const tAt = (xCss) => { const v = sv.chart.view, dpr = sv.chart.dpr; return v.tStart + (xCss * dpr - v.padL) * v.spp; };
    const laneAt = (yCss) => {
      const y = yCss * sv.chart.dpr;
      return sv.chart.lanes.find((ln) => y >= ln.top && y < ln.top + ln.h) ?? sv.chart.lanes[0];
    };
    const zoomY = (yCss, factor) => {
      const ln = laneAt(yCss);
      if (!ln) return;
      const key = sv.chart.split ? ln.chans[0] : -1;
      const [y0, y1] = sv.yZoom?.[key] ?? [ln.y0, ln.y1];
      const yv = y0 + ((ln.top + ln.h - yCss * sv.chart.dpr) / ln.h) * (y1 - y0);
      sv.yZoom = { ...(sv.yZoom ?? {}), [key]: [yv - (yv - y0) * factor, yv + (y1 - yv) * factor] };
      sv.chart.dirty = true;
      this.changed();
    };
    canvas.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      zoomY(ev.offsetY, Math.exp(Math.max(-0.5, Math.min(0.5, ev.deltaY * 0.002))));
    }, { passive: false });
    canvas.addEventListener("pointerdown", (ev) => {
      pointers.set(ev.pointerId, { x: ev.offsetX, y: ev.offsetY });
      if (pointers.size === 2) {
        const [a, b] = [...pointers.values()];
        pinch = { dist: Math.abs(a.y - b.y) || 1, y: (a.y + b.y) / 2 };
        drag = null; this.selection.hidden = true;
        return;
      }
      if (ev.button !== 0 || ev.pointerType === "touch") return;
      drag = { x0: ev.offsetX, x1: ev.offsetX };
      canvas.setPointerCapture?.(ev.pointerId);
    });
    canvas.addEventListener("pointermove", (ev) => {
      if (pointers.has(ev.pointerId)) pointers.set(ev.pointerId, { x: ev.offsetX, y: ev.offsetY });
      if (pinch && pointers.size === 2) {
        const [a, b] = [...pointers.values()];
        const dist = Math.abs(a.y - b.y) || 1;
        zoomY(pinch.y, pinch.dist / dist);
        pinch.dist = dist;
        return;
      }
      if (!drag) return;
      drag.x1 = ev.offsetX;
      const l = Math.min(drag.x0, drag.x1), w = Math.abs(drag.x1 - drag.x0);
      Object.assign(this.selection.style, { left: `${l}px`, width: `${w}px` });
      this.selection.hidden = w < 4;
    });
    const end = (ev) => {
      pointers.delete(ev.pointerId);
      if (pointers.size < 2) pinch = null;
      if (!drag) return;
      const d = drag;
      drag = null;
      this.selection.hidden = true;
      if (Math.abs(d.x1 - d.x0) < 5) return;
      let t0 = tAt(Math.min(d.x0, d.x1)), t1 = tAt(Math.max(d.x0, d.x1));
      if (!(t1 > t0)) return;
      if (!app.state.paused) app.pause();   // a zoomed time axis stands still
      sv.zoom = [t0, t1];
      sv.chart.dirty = true;
      this.changed();
    };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    canvas.addEventListener("dblclick", () => this.resetZoom());
  }

  resetZoom() {
    this.sv.zoom = null;
    this.sv.yZoom = null;
    this.sv.chart.dirty = true;
    this.changed();
  }

  // ------------------------------------------------------------------ drawn over the time chart

  /** Alert bands (the time an alert fired) and limit lines, in the chart's coordinates. */
  decorate(ctx, L, lanes, theme) {
    const sv = this.sv, { padL, pw, tStart, tEnd, spp } = L;
    const bands = bandsOf(sv.id);
    if (bands.length) {
      for (const b of bands) {
        const t1 = b.t1 ?? tEnd;
        if (t1 < tStart || b.t0 > tEnd) continue;
        const x0 = Math.max(padL, padL + (b.t0 - tStart) / spp), x1 = Math.min(padL + pw, padL + (t1 - tStart) / spp);
        ctx.fillStyle = (BAND_FILL[theme.scheme] ?? BAND_FILL.light)[b.severity] ?? BAND_FILL.light.warning;
        const w = Math.max(2 * this.sv.chart.dpr, x1 - x0);
        for (const ln of lanes) {
          if (b.channel !== null && sv.chart.split && sv.channels[ln.chans[0]]?.name !== b.channel) continue;
          ctx.fillRect(x0, ln.top, w, ln.h);
        }
      }
    }
    // limit lines: the server's (from its alert messages) and this browser's
    ctx.save();
    ctx.setLineDash([4 * sv.chart.dpr, 3 * sv.chart.dpr]);
    ctx.lineWidth = Math.max(1, Math.round(sv.chart.dpr));
    for (const ln of lanes) {
      for (const c of ln.chans) {
        const name = sv.channels[c]?.name;
        const lims = [limitOf(sv.id, name), ...serverLimitsOf(sv.id, name)].filter(Boolean);
        for (const lim of lims) {
          for (const y of [lim.above, lim.below]) {
            if (typeof y !== "number" || y < ln.y0 || y > ln.y1) continue;
            const py = Math.round(ln.Y(y)) + 0.5;
            ctx.strokeStyle = theme.palette[c % theme.palette.length];
            ctx.beginPath(); ctx.moveTo(padL, py); ctx.lineTo(padL + pw, py); ctx.stroke();
          }
        }
      }
    }
    ctx.restore();
  }

  snapshot() {
    const out = { views: [...this.kinds], zoom: this.sv.zoom, yZoom: this.sv.yZoom, stats: this.stats ?? [] };
    for (const [k, v] of this.views) out[k] = v.snapshot();
    return out;
  }

  destroy() {
    for (const v of this.views.values()) v.destroy();
  }
}
