// Gauge view: one tile per visible channel with its latest value in large type,
// the unit, a sparkline of the window and the window's min/max. A tile turns
// amber (warning) or red (critical) while an alert on its channel fires, the
// server's or this browser's own ad-hoc limit (set from the tile).
import { formatValue } from "../chart.js";
import { h } from "./util.js";
import { firingOn, limitOf, setLimit } from "./alerts.js";

const SPARK_W = 120, SPARK_H = 30;

export class GaugeView {
  constructor(sv, app) {
    this.sv = sv;
    this.app = app;
    this.tiles = [];
    this.grid = h("div", { class: "gauges" });
    this.el = h("div", { class: "view view-gauge", "data-view": "gauge" }, this.grid);
    this.channelsChanged();
  }

  channelsChanged() {
    this.tiles = this.sv.channels.map((ch, c) => this._tile(ch, c));
    this.grid.replaceChildren(...this.tiles.map((t) => t.el));
  }

  _tile(ch, c) {
    const t = { c, shown: {} };
    t.value = h("div", { class: "gauge-value", "data-testid": `gauge-value-${ch.name}` }, "–");
    t.minmax = h("div", { class: "gauge-minmax", "data-testid": `gauge-minmax-${ch.name}` });
    t.spark = h("canvas", { class: "spark", width: SPARK_W, height: SPARK_H, "aria-hidden": "true" });
    const lim = limitOf(this.sv.id, ch.name);
    t.above = h("input", { type: "number", step: "any", placeholder: "above", "aria-label": `${ch.name}: alert above`, value: lim?.above ?? "" });
    t.below = h("input", { type: "number", step: "any", placeholder: "below", "aria-label": `${ch.name}: alert below`, value: lim?.below ?? "" });
    t.form = h("form", { class: "gauge-limit", hidden: true, "data-testid": `gauge-limit-${ch.name}`,
      onsubmit: (ev) => {
        ev.preventDefault();
        setLimit(this.sv.id, ch.name, parseFloat(t.above.value), parseFloat(t.below.value));
        t.form.hidden = true;
        this.update();
      } }, t.below, t.above, h("button", { class: "tool", type: "submit" }, "Set"));
    const limBtn = h("button", { class: "tool limit-btn", title: "Ad-hoc limit for this browser only", "data-testid": `gauge-limit-btn-${ch.name}`,
      onclick: () => { t.form.hidden = !t.form.hidden; } }, "limit");
    t.el = h("div", { class: "gauge", "data-testid": `gauge-${ch.name}`, "data-channel": ch.name },
      h("div", { class: "gauge-head" }, h("span", { class: "sw" }), h("span", { class: "gauge-name", text: ch.name }), limBtn),
      h("div", { class: "gauge-main" }, t.value, h("span", { class: "gauge-unit", text: ch.unit })),
      t.spark, t.minmax, t.form);
    t.sw = t.el.querySelector(".sw");
    return t;
  }

  /** At the dashboard's text rate: values, min/max, sparklines, alert colours. */
  update(tEnd, windowS, theme) {
    const sv = this.sv, s = sv.series;
    // Live: everything received counts (the newest sample may be stamped a little
    // after the view's right edge); paused: what was in view.
    const i1 = this.app.state.paused ? s.lowerBound(tEnd + 1e-9) : s.len, i0 = s.lowerBound(tEnd - windowS);
    for (const t of this.tiles) {
      const hidden = sv.hidden.has(t.c);
      if (t.el.hidden !== hidden) t.el.hidden = hidden;
      if (hidden) continue;
      const ch = sv.channels[t.c];
      t.sw.style.setProperty("--sw", theme.palette[t.c % theme.palette.length]);
      // the latest value shown is the newest sample in view (while paused: at the pause)
      let latest = NaN;
      for (let i = i1 - 1; i >= i0 && i >= i1 - 64; i--) { const v = s.valueAt(t.c, i); if (v === v) { latest = v; break; } }
      const text = formatValue(latest, 5);
      if (t.shown.v !== text) { t.shown.v = text; t.value.textContent = text; t.value.dataset.raw = String(latest); }
      const { lo, hi } = this._spark(t, i0, i1, theme);
      const mm = lo <= hi ? `min ${formatValue(lo)} · max ${formatValue(hi)}` : "no data in window";
      if (t.shown.mm !== mm) { t.shown.mm = mm; t.minmax.textContent = mm; }
      const level = firingOn(sv.id, ch.name) ?? "";
      if (t.el.dataset.alert !== level) t.el.dataset.alert = level;
      const lim = limitOf(sv.id, ch.name);
      t.el.dataset.limit = lim ? "set" : "";
    }
  }

  /** Sparkline: min/max per column over the window; returns the window's min/max. */
  _spark(t, i0, i1, theme) {
    const s = this.sv.series, ctx = t.spark.getContext("2d");
    ctx.clearRect(0, 0, SPARK_W, SPARK_H);
    const n = i1 - i0;
    const lo = new Float32Array(SPARK_W).fill(Infinity), hi = new Float32Array(SPARK_W).fill(-Infinity);
    let glo = Infinity, ghi = -Infinity;
    // A long window at a high rate: visit at most ~50 samples per column (min/max stay
    // close; a one-sample spike can be missed here, never in the time chart).
    const stride = Math.max(1, Math.floor(n / (SPARK_W * 50)));
    for (let i = i0; i < i1; i += stride) {
      const v = s.valueAt(t.c, i);
      if (v !== v) continue;
      const col = Math.min(SPARK_W - 1, Math.floor(((i - i0) / n) * SPARK_W));
      if (v < lo[col]) lo[col] = v;
      if (v > hi[col]) hi[col] = v;
      if (v < glo) glo = v;
      if (v > ghi) ghi = v;
    }
    if (!(glo <= ghi)) return { lo: glo, hi: ghi };
    const span = ghi - glo || 1;
    const Y = (v) => SPARK_H - 2 - ((v - glo) / span) * (SPARK_H - 4);
    ctx.strokeStyle = theme.palette[t.c % theme.palette.length];
    ctx.lineWidth = 1;
    ctx.beginPath();
    let pen = false;
    for (let k = 0; k < SPARK_W; k++) {
      if (lo[k] === Infinity) continue;
      if (pen) ctx.lineTo(k + 0.5, Y(hi[k])); else { ctx.moveTo(k + 0.5, Y(hi[k])); pen = true; }
      if (lo[k] !== hi[k]) ctx.lineTo(k + 0.5, Y(lo[k]));
    }
    ctx.stroke();
    return { lo: glo, hi: ghi };
  }

  snapshot() {
    return this.tiles.map((t) => ({ channel: this.sv.channels[t.c]?.name, text: t.value.textContent, value: parseFloat(t.value.dataset.raw),
      minmax: t.minmax.textContent, alert: t.el.dataset.alert || null, hidden: t.el.hidden }));
  }

  frame() { return false; }
  state() { return {}; }
  destroy() {}
}
