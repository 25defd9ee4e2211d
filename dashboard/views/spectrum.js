// Spectrum view: the amplitude spectrum of each visible channel over the card's
// window (Hann window, Welch averaging of up to 8 half-overlapping segments of
// up to 4,096 points), linear or dB, 0 to Nyquist. Recomputed at most 10 times a
// second, in a Web Worker; the main thread only copies the newest samples out of
// the ring and draws the result (one min/max pair per pixel column per channel).
import { spectra, peakIndex, peakFrequency } from "../fft.js";
import { niceStep, formatValue, solid32 } from "../chart.js";
import { h, SpectrumWorkerPool } from "./util.js";

export const NFFT = 4096;
export const MAX_SEGS = 8;
export const REFRESH_MS = 100;

/** Counters for benchmarks: spectra received and the time the worker spent on them. */
export const spectrumStats = { requests: 0, results: 0, computeMs: 0, inlineMs: 0 };

const pool = new SpectrumWorkerPool(new URL("./spectrum-worker.js", import.meta.url), spectra);

export class SpectrumView {
  constructor(sv, app, opts = {}) {
    this.sv = sv;
    this.app = app;
    this.scale = opts.scale === "lin" ? "lin" : "db";
    this.result = null;         // {fs, nfft, segs, resampled, df, chans: [{c, amp}]}
    this.pending = false;
    this.lastReq = -Infinity;
    this.seq = 0;
    this.dirty = true;
    this.hoverX = null;
    this.computeMs = 0;
    this.scaleBtn = h("button", { class: "tool", "data-testid": "spectrum-scale", title: "Amplitude: linear or dB",
      onclick: () => { this.scale = this.scale === "db" ? "lin" : "db"; this.dirty = true; this.scaleBtn.textContent = this.scaleLabel(); app.changed(); } },
    this.scaleLabel());
    this.caption = h("span", { class: "view-caption", "data-testid": "spectrum-caption" });
    this.canvas = h("canvas", { "data-testid": "spectrum", role: "img", "aria-label": `Spectrum of ${sv.id}` });
    this.tip = h("div", { class: "tip", "data-testid": "spectrum-tip", hidden: true });
    this.el = h("div", { class: "view view-spectrum", "data-view": "spectrum" },
      h("div", { class: "view-bar" }, h("b", { text: "Spectrum" }), this.caption, h("span", { class: "tools" }, this.scaleBtn)),
      h("div", { class: "plot" }, this.canvas, this.tip));
    this.canvas.addEventListener("pointermove", (ev) => { this.hoverX = ev.offsetX; this.dirty = true; });
    this.canvas.addEventListener("pointerleave", () => { this.hoverX = null; this.dirty = true; this.tip.hidden = true; });
  }

  scaleLabel() { return this.scale === "db" ? "dB" : "linear"; }

  /** Per animation frame: ask for a new spectrum every REFRESH_MS, draw when something changed. */
  frame(now, tEnd, windowS, theme) {
    // Half a frame early rather than a frame late: requests land every 100 ms, not every 117.
    if (!this.pending && now - this.lastReq >= REFRESH_MS - 8 && this.sv.series.len) {
      this.lastReq = now;
      this.request(tEnd, windowS);
    }
    const c = this.canvas, dpr = window.devicePixelRatio || 1;
    const w = Math.round(c.clientWidth * dpr), hh = Math.round(c.clientHeight * dpr);
    if (w && (c.width !== w || c.height !== hh)) { c.width = w; c.height = hh; this.dirty = true; }
    if (this.dirty && w) { this.draw(theme, dpr); return true; }
    return false;
  }

  /** Copy the newest samples of the window for every visible channel and send them off. */
  request(tEnd, windowS) {
    const s = this.sv.series;
    const i1 = s.lowerBound(tEnd + 1e-9);
    const iw = s.lowerBound(tEnd - windowS);
    const want = NFFT + (MAX_SEGS - 1) * (NFFT / 2);
    const i0 = Math.max(iw, i1 - want);
    const n = i1 - i0;
    if (n < 16) return;
    // Buffers come back from the worker with its answer and are reused: no garbage per refresh.
    const spare = this.spare ?? { t: null, v: [] };
    this.spare = null;
    const t = spare.t?.length === n ? spare.t : new Float64Array(n);
    copyRange(s.t, s, i0, n, t);
    const chans = [];
    for (let c = 0; c < s.nch; c++) {
      if (this.sv.hidden.has(c)) continue;
      const old = spare.v.pop();
      const v = old?.length === n ? old : new Float32Array(n);
      copyRange(s.v[c], s, i0, n, v);
      chans.push({ c, v });
    }
    if (!chans.length) return;
    this.pending = true;
    spectrumStats.requests++;
    const seq = ++this.seq;
    pool.run({ t, chans, nfft: NFFT, maxSegs: MAX_SEGS }, (res) => {
      this.pending = false;
      if (res.t) this.spare = { t: res.t, v: res.chans.map((ch) => ch.v) };
      if (seq !== this.seq) return;
      this.computeMs = res.ms;
      spectrumStats.results++;
      spectrumStats.computeMs += res.ms;
      spectrumStats.inlineMs = pool.inlineMs;
      const first = res.out.find((o) => o.s);
      if (!first) return;
      const { fs, nfft, segs, resampled, df } = first.s;
      this.result = { fs, nfft, segs, resampled, df, chans: res.out.filter((o) => o.s).map((o) => ({ c: o.c, amp: o.s.amp })) };
      this.dirty = true;
    });
  }

  peaks() {
    const r = this.result;
    if (!r) return [];
    return r.chans.map(({ c, amp }) => {
      const k = peakIndex(amp, 1);
      return { channel: this.sv.channels[c]?.name, f: peakFrequency(amp, k, r.df), amp: amp[k] };
    });
  }

  draw(theme, dpr) {
    this.dirty = false;
    const ctx = this.canvas.getContext("2d", { alpha: false });
    const W = this.canvas.width, H = this.canvas.height;
    const padL = Math.round(50 * dpr), padR = Math.round(8 * dpr), padT = Math.round(6 * dpr), padB = Math.round(18 * dpr);
    const pw = Math.max(1, W - padL - padR), ph = Math.max(1, H - padT - padB);
    ctx.fillStyle = theme.bg;
    ctx.fillRect(0, 0, W, H);
    ctx.font = `${Math.round(11 * dpr)}px system-ui, sans-serif`;
    const r = this.result;
    if (!r) {
      ctx.fillStyle = theme.muted; ctx.textAlign = "center"; ctx.textBaseline = "middle";
      ctx.fillText("collecting samples…", padL + pw / 2, padT + ph / 2);
      this.caption.textContent = "";
      return;
    }
    const nyq = r.fs / 2, bins = r.nfft / 2 + 1;
    const db = this.scale === "db";
    let top = 0;
    for (const { amp } of r.chans) for (let k = 1; k < bins; k++) if (amp[k] > top) top = amp[k];
    if (!(top > 0)) top = 1;
    const tr = db ? (a) => 20 * Math.log10(Math.max(a, 1e-12)) : (a) => a;
    const y1 = db ? Math.ceil(tr(top) / 10) * 10 : top * 1.05, y0 = db ? y1 - 100 : 0;
    const Y = (v) => padT + ph - ((Math.min(Math.max(v, y0), y1) - y0) / (y1 - y0)) * ph;
    const X = (f) => padL + (f / nyq) * pw;
    // Grid, then the traces, rasterised in JS into one ImageData (as the time
    // chart's dense mode does): software Skia strokes long paths slowly, and 16
    // traces of a few hundred columns each are long paths.
    const ys = db ? 20 : niceStep(y1 - y0, Math.max(2, Math.floor(ph / (40 * dpr))));
    const fsStep = niceStep(nyq, Math.max(2, Math.floor(pw / (70 * dpr))));
    const yTicks = [], fTicks = [];
    for (let v = Math.ceil(y0 / ys) * ys; v <= y1 + 1e-9; v += ys) yTicks.push(v);
    for (let f = 0; f <= nyq + 1e-9; f += fsStep) fTicks.push(f);
    if (!this.img || this.img.width !== pw || this.img.height !== ph) {
      this.img = ctx.createImageData(pw, ph);
      this.px = new Uint32Array(this.img.data.buffer);
    }
    const px = this.px, bg = solid32(theme.bg, theme.bg), grid = solid32(theme.grid, theme.bg);
    px.fill(bg);
    for (const v of yTicks) { const y = Math.round(Y(v)) - padT; if (y >= 0 && y < ph) px.fill(grid, y * pw, y * pw + pw); }
    for (const f of fTicks) { const x = Math.round(X(f)) - padL; if (x >= 0 && x < pw) for (let y = 0; y < ph; y++) px[y * pw + x] = grid; }
    const perCol = (bins - 1) / pw;
    for (const { c, amp } of r.chans) {
      const col = solid32(theme.palette[c % theme.palette.length], theme.bg);
      let prev = NaN;
      for (let x = 0; x < pw; x++) {
        // the bins of this pixel column (at least one: with few bins, interpolate between them)
        let lo, hi;
        if (perCol >= 1) {
          const a = Math.floor(x * perCol), b = Math.min(bins, Math.max(a + 1, Math.floor((x + 1) * perCol)));
          lo = Infinity; hi = -Infinity;
          for (let k = a; k < b; k++) { const v = amp[k]; if (v < lo) lo = v; if (v > hi) hi = v; }
        } else {
          const fk = x * perCol, k = Math.min(bins - 2, Math.floor(fk)), fr = fk - k;
          lo = hi = amp[k] + (amp[k + 1] - amp[k]) * fr;
        }
        const yHi = Math.round(Y(tr(hi))) - padT, yLo = Math.round(Y(tr(lo))) - padT;
        let a = yHi, b = yLo;
        if (prev === prev) { if (prev < a) a = prev; if (prev > b) b = prev; }
        prev = yHi;
        a = Math.max(0, a); b = Math.min(ph - 1, b);
        for (let y = a, i = a * pw + x; y <= b; y++, i += pw) px[i] = col;
      }
    }
    ctx.putImageData(this.img, padL, padT);
    // labels, outside the plot area
    ctx.fillStyle = theme.muted;
    ctx.textAlign = "right"; ctx.textBaseline = "middle";
    for (const v of yTicks) {
      ctx.fillText(db ? `${v.toFixed(0)} dB` : formatValue(v, 3), padL - 4 * dpr, Math.min(padT + ph - 7 * dpr, Math.max(padT + 6 * dpr, Math.round(Y(v)))));
    }
    ctx.textAlign = "center"; ctx.textBaseline = "top";
    for (const f of fTicks) {
      const x = Math.round(X(f)) + 0.5;
      const label = `${+f.toPrecision(4)}${f + fsStep > nyq ? " Hz" : ""}`;
      const half = ctx.measureText(label).width / 2;
      if (x + half <= W && x - half >= 0) ctx.fillText(label, x, padT + ph + 3 * dpr);
    }
    ctx.strokeStyle = theme.axis;
    ctx.lineWidth = Math.max(1, Math.round(dpr));
    ctx.strokeRect(padL + 0.5, padT + 0.5, pw - 1, ph - 1);
    const segText = r.segs > 1 ? `Welch ×${r.segs}` : "1 segment";
    this.caption.textContent = `${segText} · N=${r.nfft} · Δf ${formatValue(r.df, 3)} Hz · 0–${formatValue(nyq, 4)} Hz${r.resampled ? " · resampled: uneven timestamps" : ""}`;
    this.caption.dataset.resampled = String(r.resampled);
    this.el.dataset.resampled = String(r.resampled);
    // hover: frequency under the cursor and each channel's peak near it
    if (this.hoverX === null) { this.tip.hidden = true; return; }
    const x = this.hoverX * dpr;
    if (x < padL || x > padL + pw) { this.tip.hidden = true; return; }
    const f = ((x - padL) / pw) * nyq;
    ctx.strokeStyle = theme.axis;
    ctx.beginPath(); ctx.moveTo(Math.round(x) + 0.5, padT); ctx.lineTo(Math.round(x) + 0.5, padT + ph); ctx.stroke();
    const reach = Math.max(2, Math.ceil((6 * dpr * perCol)));   // ±6 px worth of bins
    const k0 = Math.round(f / r.df);
    const rows = [h("div", { class: "tip-time", text: `${formatValue(f, 4)} Hz` })];
    this.hoverPeaks = [];
    for (const { c, amp } of r.chans) {
      const k = peakIndex(amp, Math.max(1, k0 - reach), k0 + reach + 1);
      if (k < 0) continue;
      const pf = peakFrequency(amp, k, r.df), ch = this.sv.channels[c];
      this.hoverPeaks.push({ channel: ch?.name, f: pf, amp: amp[k] });
      const sw = h("span", { class: "sw" });
      sw.style.setProperty("--sw", theme.palette[c % theme.palette.length]);
      rows.push(h("div", { "data-channel": ch?.name ?? "" }, sw, `${ch?.name ?? c} peak `, h("b", { text: `${formatValue(pf, 4)} Hz` }),
        ` ${db ? `${tr(amp[k]).toFixed(1)} dB` : formatValue(amp[k])}${!db && ch?.unit ? ` ${ch.unit}` : ""}`));
      ctx.fillStyle = theme.palette[c % theme.palette.length];
      ctx.beginPath(); ctx.arc(X(pf), Y(tr(amp[k])), 3 * dpr, 0, 2 * Math.PI); ctx.fill();
    }
    this.tip.replaceChildren(...rows);
    this.tip.hidden = false;
    const wCss = this.canvas.clientWidth;
    this.tip.style.left = this.hoverX > wCss / 2 ? "" : `${this.hoverX + 14}px`;
    this.tip.style.right = this.hoverX > wCss / 2 ? `${wCss - this.hoverX + 14}px` : "";
  }

  snapshot() {
    const r = this.result;
    return r ? { fs: r.fs, nfft: r.nfft, segs: r.segs, df: r.df, resampled: r.resampled, scale: this.scale, peaks: this.peaks(),
      hoverPeaks: this.hoverPeaks ?? [], computeMs: this.computeMs, caption: this.caption.textContent } : { scale: this.scale, peaks: [] };
  }

  state() { return { scale: this.scale }; }
  destroy() {}
}

/** Copy n logical samples from index i0 of a ring array (two typed-array copies at most). */
export function copyRange(arr, s, i0, n, out) {
  const p = s.phys(i0), first = Math.min(n, s.cap - p);
  out.set(arr.subarray(p, p + first), 0);
  if (first < n) out.set(arr.subarray(0, n - first), first);
}
