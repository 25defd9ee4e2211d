// XY view: one channel against another (magnetometer x/y, a Lissajous figure,
// current against voltage) over the last N seconds, the older part of the trail
// fading out. Channels with the same unit share one scale, so a circle stays a
// circle; otherwise each axis fits its own data. At most MAX_POINTS points are
// drawn (an even subsample of the trail), in TRAIL_STEPS paths of rising opacity.
import { niceStep, formatValue } from "../chart.js";
import { h } from "./util.js";

export const TRAILS = [1, 5, 10, 30, 120];
const MAX_POINTS = 4000;
const TRAIL_STEPS = 8;
const MIN_REDRAW_MS = 33;

export class XYView {
  constructor(sv, app, opts = {}) {
    this.sv = sv;
    this.app = app;
    this.xName = opts.x ?? sv.channels[0]?.name ?? null;
    this.yName = opts.y ?? sv.channels[1]?.name ?? sv.channels[0]?.name ?? null;
    this.trailS = TRAILS.includes(opts.trail) ? opts.trail : 5;
    this.last = { version: -1, at: 0, tEnd: NaN };
    this.dirty = true;
    this.bbox = null;
    this.xSel = h("select", { "data-testid": "xy-x", "aria-label": "X channel", onchange: () => { this.xName = this.xSel.value; this.dirty = true; app.changed(); } });
    this.ySel = h("select", { "data-testid": "xy-y", "aria-label": "Y channel", onchange: () => { this.yName = this.ySel.value; this.dirty = true; app.changed(); } });
    this.trailSel = h("select", { "data-testid": "xy-trail", "aria-label": "Trail length", onchange: () => { this.trailS = +this.trailSel.value; this.dirty = true; app.changed(); } },
      ...TRAILS.map((s) => h("option", { value: s, selected: s === this.trailS, text: `${s} s trail` })));
    this.canvas = h("canvas", { "data-testid": "xy", role: "img", "aria-label": `XY plot of ${sv.id}` });
    this.el = h("div", { class: "view view-xy", "data-view": "xy" },
      h("div", { class: "view-bar" }, h("b", { text: "XY" }), h("span", { class: "tools" },
        h("label", {}, "X ", this.xSel), h("label", {}, "Y ", this.ySel), this.trailSel)),
      h("div", { class: "plot xy-plot" }, this.canvas));
    this.channelsChanged();
  }

  channelsChanged() {
    const names = this.sv.channels.map((c) => c.name);
    for (const sel of [this.xSel, this.ySel]) sel.replaceChildren(...names.map((n) => h("option", { value: n, text: n })));
    if (!names.includes(this.xName)) this.xName = names[0] ?? null;
    if (!names.includes(this.yName)) this.yName = names[1] ?? names[0] ?? null;
    this.xSel.value = this.xName ?? "";
    this.ySel.value = this.yName ?? "";
    this.dirty = true;
  }

  frame(now, tEnd, windowS, theme) {
    const c = this.canvas, dpr = window.devicePixelRatio || 1;
    const w = Math.round(c.clientWidth * dpr), hh = Math.round(c.clientHeight * dpr);
    if (w && (c.width !== w || c.height !== hh)) { c.width = w; c.height = hh; this.dirty = true; }
    const s = this.sv.series;
    const changed = this.dirty || s.version !== this.last.version || tEnd !== this.last.tEnd;
    if (!w || !changed || now - this.last.at < MIN_REDRAW_MS) return false;
    this.last = { version: s.version, at: now, tEnd };
    this.dirty = false;
    this.draw(tEnd, theme, dpr);
    return true;
  }

  draw(tEnd, theme, dpr) {
    const ctx = this.canvas.getContext("2d", { alpha: false });
    const W = this.canvas.width, H = this.canvas.height, s = this.sv.series;
    ctx.fillStyle = theme.bg;
    ctx.fillRect(0, 0, W, H);
    const cx = this.sv.channels.findIndex((c) => c.name === this.xName), cy = this.sv.channels.findIndex((c) => c.name === this.yName);
    const i1 = s.lowerBound(tEnd + 1e-9), i0 = s.lowerBound(tEnd - this.trailS);
    ctx.font = `${Math.round(11 * dpr)}px system-ui, sans-serif`;
    if (cx < 0 || cy < 0 || cx >= s.nch || cy >= s.nch || i1 - i0 < 1) {
      ctx.fillStyle = theme.muted; ctx.textAlign = "center"; ctx.textBaseline = "middle";
      ctx.fillText(i1 - i0 < 1 ? "no samples in the trail" : "pick two channels", W / 2, H / 2);
      this.bbox = null;
      return;
    }
    const step = Math.max(1, Math.ceil((i1 - i0) / MAX_POINTS));
    const xs = [], ys = [];
    let xlo = Infinity, xhi = -Infinity, ylo = Infinity, yhi = -Infinity;
    for (let i = i0; i < i1; i += step) {
      const x = s.valueAt(cx, i), y = s.valueAt(cy, i);
      xs.push(x); ys.push(y);
      if (x === x && y === y) {
        if (x < xlo) xlo = x; if (x > xhi) xhi = x;
        if (y < ylo) ylo = y; if (y > yhi) yhi = y;
      }
    }
    if (xlo === Infinity) { this.bbox = null; return; }
    // a square plot area, centred; equal scales when the units agree
    const pad = Math.round(34 * dpr);
    const side = Math.max(1, Math.min(W - 2 * pad, H - 2 * pad));
    const ox = Math.round((W - side) / 2), oy = Math.round((H - side) / 2);
    const widen = (lo, hi) => { const m = (hi - lo) * 0.06 || Math.abs(hi) * 0.05 || 1; return [lo - m, hi + m]; };
    let [x0, x1] = widen(xlo, xhi), [y0, y1] = widen(ylo, yhi);
    const ux = this.sv.channels[cx].unit, uy = this.sv.channels[cy].unit;
    if (ux === uy) {
      const span = Math.max(x1 - x0, y1 - y0), mx = (x0 + x1) / 2, my = (y0 + y1) / 2;
      [x0, x1, y0, y1] = [mx - span / 2, mx + span / 2, my - span / 2, my + span / 2];
    }
    const X = (v) => ox + ((v - x0) / (x1 - x0)) * side, Y = (v) => oy + side - ((v - y0) / (y1 - y0)) * side;
    // grid, axes
    ctx.strokeStyle = theme.grid; ctx.lineWidth = Math.max(1, Math.round(dpr));
    ctx.beginPath();
    ctx.fillStyle = theme.muted;
    const gx = niceStep(x1 - x0, 5), gy = niceStep(y1 - y0, 5);
    ctx.textAlign = "center"; ctx.textBaseline = "top";
    for (let v = Math.ceil(x0 / gx) * gx; v <= x1; v += gx) { const x = Math.round(X(v)) + 0.5; ctx.moveTo(x, oy); ctx.lineTo(x, oy + side); ctx.fillText(formatValue(v, 3), x, oy + side + 3 * dpr); }
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    for (let v = Math.ceil(y0 / gy) * gy; v <= y1; v += gy) { const y = Math.round(Y(v)) + 0.5; ctx.moveTo(ox, y); ctx.lineTo(ox + side, y); ctx.fillText(formatValue(v, 3), ox - 4 * dpr, y); }
    ctx.stroke();
    ctx.strokeStyle = theme.axis;
    ctx.strokeRect(ox + 0.5, oy + 0.5, side - 1, side - 1);
    ctx.fillStyle = theme.fg; ctx.textAlign = "left"; ctx.textBaseline = "top";
    ctx.fillText(`${this.yName}${uy ? ` (${uy})` : ""} vs ${this.xName}${ux ? ` (${ux})` : ""}`, ox + 4 * dpr, oy + 3 * dpr);
    // the trail, oldest first and faintest
    ctx.save();
    ctx.beginPath(); ctx.rect(ox, oy, side, side); ctx.clip();
    ctx.strokeStyle = theme.palette[cy % theme.palette.length];
    ctx.lineWidth = 1.25 * dpr; ctx.lineJoin = "round";
    const n = xs.length, per = Math.ceil(n / TRAIL_STEPS);
    let bx0 = Infinity, bx1 = -Infinity, by0 = Infinity, by1 = -Infinity;
    for (let k = 0; k < TRAIL_STEPS; k++) {
      const a = k * per, b = Math.min(n, (k + 1) * per + 1);
      if (a >= n) break;
      ctx.globalAlpha = 0.12 + (0.88 * (k + 1)) / TRAIL_STEPS;
      ctx.beginPath();
      let pen = false;
      for (let i = a; i < b; i++) {
        const x = xs[i], y = ys[i];
        if (x !== x || y !== y) { pen = false; continue; }
        const px = X(x), py = Y(y);
        if (px < bx0) bx0 = px; if (px > bx1) bx1 = px; if (py < by0) by0 = py; if (py > by1) by1 = py;
        if (pen) ctx.lineTo(px, py); else { ctx.moveTo(px, py); pen = true; }
      }
      ctx.stroke();
    }
    ctx.globalAlpha = 1;
    // the newest point
    const lx = xs[n - 1], ly = ys[n - 1];
    if (lx === lx && ly === ly) { ctx.fillStyle = ctx.strokeStyle; ctx.beginPath(); ctx.arc(X(lx), Y(ly), 3.5 * dpr, 0, 2 * Math.PI); ctx.fill(); }
    ctx.restore();
    this.bbox = { x: bx0 / dpr, y: by0 / dpr, w: (bx1 - bx0) / dpr, h: (by1 - by0) / dpr, points: n };
  }

  snapshot() { return { x: this.xName, y: this.yName, trail: this.trailS, bbox: this.bbox }; }
  state() { return { x: this.xName, y: this.yName, trail: this.trailS }; }
  destroy() {}
}
