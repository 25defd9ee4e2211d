// Canvas line chart for one stream: all channels share the time axis and, unless the
// chart is split into one lane per channel (each with its own autoscaled Y axis), the Y axis.
// Drawing reads the ring buffer's typed arrays directly. When a window holds more
// than two samples per pixel column, each column is reduced to min and max (drawn
// in the order they occurred), so a one-sample spike always reaches the screen.
// Columns are aligned to absolute time, so live scrolling moves in whole pixels and
// a chart whose aligned view and data have not changed is not redrawn.

const TIME_STEPS = [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800];

export function niceStep(span, target) {
  const raw = span / Math.max(1, target);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const r = raw / mag;
  return (r <= 1 ? 1 : r <= 2 ? 2 : r <= 2.5 ? 2.5 : r <= 5 ? 5 : 10) * mag;
}

function pad2(n) { return n < 10 ? "0" + n : "" + n; }
export function clockLabel(t, step) {
  const d = new Date(t * 1000);
  let s = `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  if (step < 1) s += "." + Math.floor(d.getMilliseconds() / 100);
  return s;
}

export function formatValue(v, digits = 4) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
  return v.toFixed(Math.max(0, digits - 1 - Math.floor(Math.log10(a || 1))));
}

/** Min/max over one physical range; writes into out[0..3] = lo, hi, iLo, iHi. */
function minmax(arr, a, b, out) {
  let lo = Infinity, hi = -Infinity, ilo = -1, ihi = -1;
  for (let j = a; j < b; j++) {
    const v = arr[j];
    if (v < lo) { lo = v; ilo = j; }
    if (v > hi) { hi = v; ihi = j; }
  }
  if (lo < out[0]) { out[0] = lo; out[2] = ilo; }
  if (hi > out[1]) { out[1] = hi; out[3] = ihi; }
}

// CSS colour -> [r, g, b, a] through a 1x1 canvas (cached), and packed RGBA32 (little-endian).
const colorCache = new Map();
let colorCtx = null;
export function rgba(css) {
  let v = colorCache.get(css);
  if (v) return v;
  colorCtx ??= new OffscreenCanvas(1, 1).getContext("2d", { willReadFrequently: true });
  colorCtx.clearRect(0, 0, 1, 1);
  colorCtx.fillStyle = "#000";
  colorCtx.fillStyle = css;
  colorCtx.fillRect(0, 0, 1, 1);
  const d = colorCtx.getImageData(0, 0, 1, 1).data;
  v = [d[0], d[1], d[2], d[3] / 255];
  colorCache.set(css, v);
  return v;
}
function pack(r, g, b) { return ((255 << 24) | (b << 16) | (g << 8) | r) >>> 0; }
/** css blended over bgCss as one opaque RGBA pixel (little-endian Uint32, for ImageData). */
export function solid32(css, bgCss) {
  const [r, g, b, a] = rgba(css), [R, G, B] = rgba(bgCss);
  return pack(Math.round(r * a + R * (1 - a)), Math.round(g * a + G * (1 - a)), Math.round(b * a + B * (1 - a)));
}

export const SPLIT_RATIO = 20;      // default to lanes when magnitudes differ more than this
export const AUTO_SPLIT_MAX = 8;    // ... and there are at most this many visible channels
export const LANE_GAP = 6;          // CSS px between lanes
export const LANE_MIN_PX = 40;      // CSS px per lane; the plot grows to keep lanes readable

/**
 * Whether a chart should start split: the visible channels' magnitudes (largest
 * |value| in view) differ by more than SPLIT_RATIO. Channels sharing a unit are
 * one group (their sizes are meant to be compared, e.g. three accelerometer
 * axes), channels without a unit stand alone. null: no data to decide on yet.
 */
export function wantsSplit(channels, shown, lo, hi) {
  if (shown.length < 2 || shown.length > AUTO_SPLIT_MAX) return false;
  const level = new Map();
  for (const c of shown) {
    if (!(lo[c] <= hi[c])) continue;   // no finite value in view
    const unit = channels[c]?.unit || `#${c}`;
    level.set(unit, Math.max(level.get(unit) ?? 0, Math.abs(lo[c]), Math.abs(hi[c])));
  }
  if (!level.size) return null;
  const ls = [...level.values()].filter((x) => x > 0 && Number.isFinite(x));
  return ls.length >= 2 && Math.max(...ls) / Math.min(...ls) > SPLIT_RATIO;
}

/** Autoscaled [y0, y1] for data in [lo, hi]: 5 % padding, rounded out to a nice step. */
export function autoRange(lo, hi, ticks) {
  if (hi - lo < 1e-9 * Math.max(1, Math.abs(hi))) { lo -= 1; hi += 1; }
  const padY = (hi - lo) * 0.05;
  const step = niceStep(hi - lo + 2 * padY, ticks);
  return [Math.floor((lo - padY) / step) * step, Math.ceil((hi + padY) / step) * step];
}

export class Chart {
  constructor(canvas, sv) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d", { alpha: false });
    this.sv = sv;                // the stream view: series, channels, hidden, yMode, yFixed
    this.dpr = 1;
    this.dirty = true;
    this.visible = true;
    this.last = { tEnd: NaN, windowS: NaN, version: -1, w: 0, h: 0 };
    this.hoverX = null;          // CSS px from the canvas' left edge, or null
    this.yRange = [0, 1];        // last range drawn (what "fix Y" freezes)
    this.view = { tStart: 0, tEnd: 0, spp: 1, padL: 0, pw: 1 };
    this.cols = 0;
    this.bounds = new Int32Array(1);
    this.colLo = [];
    this.colHi = [];
    this.colOrd = [];
    this.breaks = new Uint8Array(1);
    this.mm = new Float64Array(4);
    this.chLo = new Float64Array(0);   // per channel: min and max in view (last draw)
    this.chHi = new Float64Array(0);
    this.lanes = [];             // last draw: [{chans, top, h, y0, y1, ...}] in canvas px
    this.split = false;          // last draw was split into lanes
    this.prevRange = new Map();  // lane key -> last Y range (kept while the lane has no data)
  }

  resize(cssW, cssH, dpr) {
    const w = Math.max(1, Math.round(cssW * dpr)), h = Math.max(1, Math.round(cssH * dpr));
    if (w === this.canvas.width && h === this.canvas.height && dpr === this.dpr) return;
    this.canvas.width = w;
    this.canvas.height = h;
    this.dpr = dpr;
    this.dirty = true;
  }

  _layout(windowS, tEndRaw) {
    const dpr = this.dpr, W = this.canvas.width, H = this.canvas.height;
    const padL = Math.round(50 * dpr), padR = Math.round(8 * dpr), padT = Math.round(6 * dpr), padB = Math.round(18 * dpr);
    const pw = Math.max(1, W - padL - padR), ph = Math.max(1, H - padT - padB);
    const spp = windowS / pw;
    const tEnd = Math.ceil(tEndRaw / spp) * spp;   // whole-column scrolling
    return { padL, padR, padT, padB, pw, ph, spp, tEnd, tStart: tEnd - windowS, W, H };
  }

  /** True when a draw would change pixels. */
  needsDraw(tEndRaw, windowS, paused = false) {
    if (!this.visible) return false;
    if (this.dirty) return true;
    const L = this._layout(windowS, tEndRaw), last = this.last;
    return L.tEnd !== last.tEnd || windowS !== last.windowS || (!paused && this.sv.series.version !== last.version);
  }

  _ensureCols(pw, nch) {
    if (this.cols !== pw || this.colLo.length !== nch) {
      this.cols = pw;
      this.bounds = new Int32Array(pw + 1);
      this.breaks = new Uint8Array(pw);
      this.colLo = []; this.colHi = []; this.colOrd = [];
      for (let c = 0; c < nch; c++) {
        this.colLo.push(new Float32Array(pw));
        this.colHi.push(new Float32Array(pw));
        this.colOrd.push(new Uint8Array(pw));
      }
    }
  }

  draw(tEndRaw, windowS, theme, stats) {
    const sv = this.sv, s = sv.series, ctx = this.ctx, dpr = this.dpr;
    const L = this._layout(windowS, tEndRaw);
    const { padL, padT, pw, ph, spp, tEnd, tStart, W, H } = L;
    this.view = L;
    this.last = { tEnd, windowS, version: s.version, w: W, h: H };
    this.dirty = false;
    const nch = s.nch, cap = s.cap, head = s.head, T = s.t;
    const shown = [];
    for (let c = 0; c < nch; c++) if (!sv.hidden.has(c)) shown.push(c);
    if (this.chLo.length !== nch) { this.chLo = new Float64Array(nch); this.chHi = new Float64Array(nch); }
    const chLo = this.chLo.fill(Infinity), chHi = this.chHi.fill(-Infinity);

    ctx.fillStyle = theme.bg;
    ctx.fillRect(0, 0, W, H);

    // ---- which samples are in view
    let i0 = s.lowerBound(tStart);
    let i1 = s.lowerBound(tEnd + 1e-9);
    const dense = i1 - i0 > 2 * pw;
    if (!dense) { if (i0 > 0) i0--; if (i1 < s.len) i1++; }   // one beyond each edge: lines reach the border
    let points = 0;

    if (dense) {
      this._ensureCols(pw, nch);
      const bounds = this.bounds, inv = 1 / spp;
      let k = 0;
      bounds[0] = i0;
      for (let i = i0; i < i1; i++) {
        let p = head + i; if (p >= cap) p -= cap;
        let col = Math.floor((T[p] - tStart) * inv);
        if (col >= pw) col = pw - 1;
        while (k < col) bounds[++k] = i;
      }
      while (k < pw) bounds[++k] = i1;
      const mm = this.mm;
      for (const c of shown) {
        const arr = s.v[c], cl = this.colLo[c], ch = this.colHi[c], co = this.colOrd[c];
        let lo = Infinity, hi = -Infinity;
        for (k = 0; k < pw; k++) {
          const a = bounds[k], b = bounds[k + 1];
          mm[0] = Infinity; mm[1] = -Infinity;
          if (a < b) {
            let pa = head + a; if (pa >= cap) pa -= cap;
            const pb = pa + (b - a);
            if (pb <= cap) minmax(arr, pa, pb, mm);
            else { minmax(arr, pa, cap, mm); minmax(arr, 0, pb - cap, mm); }
          }
          if (mm[0] === Infinity) { cl[k] = NaN; continue; }   // empty or all-NaN column
          cl[k] = mm[0]; ch[k] = mm[1];
          // order of occurrence, accounting for wrap (physical index < pa means wrapped)
          let il = mm[2], ih = mm[3];
          if (il < head) il += cap;
          if (ih < head) ih += cap;
          co[k] = ih < il ? 1 : 0;
          if (mm[0] < lo) lo = mm[0];
          if (mm[1] > hi) hi = mm[1];
        }
        chLo[c] = lo; chHi[c] = hi;
      }
    } else {
      for (const c of shown) {
        const arr = s.v[c];
        let lo = Infinity, hi = -Infinity;
        for (let i = i0; i < i1; i++) {
          let p = head + i; if (p >= cap) p -= cap;
          const v = arr[p];
          if (v < lo) lo = v;
          if (v > hi) hi = v;
        }
        chLo[c] = lo; chHi[c] = hi;
      }
    }

    // ---- shared axis or one lane per channel; the default is decided once, from the data
    if (sv.split === null && i1 - i0 >= 2) {
      const want = wantsSplit(sv.channels, shown, chLo, chHi);
      if (want !== null) { sv.split = want; sv.splitDecided?.(); }
    }
    const split = sv.split === true && shown.length > 0;
    const lanes = split ? shown.map((c) => [c]) : [shown];
    const n = lanes.length, sep = split ? Math.round(LANE_GAP * dpr) : 0;
    const tickPx = (split ? 30 : 40) * dpr;
    this.lanes = lanes.map((chans, li) => {
      const top = padT + Math.round((li * (ph + sep)) / n);
      const bot = padT + Math.round(((li + 1) * (ph + sep)) / n) - sep;
      const h = Math.max(1, bot - top);
      let lo = Infinity, hi = -Infinity;
      for (const c of chans) { if (chLo[c] < lo) lo = chLo[c]; if (chHi[c] > hi) hi = chHi[c]; }
      const key = split ? chans[0] : -1;
      let y0, y1;
      if (!split && sv.yMode === "fixed") [y0, y1] = sv.yFixed;
      else if (sv.yZoom?.[key]) [y0, y1] = sv.yZoom[key];   // wheel/pinch zoom (views/index.js)
      else if (lo === Infinity) [y0, y1] = this.prevRange.get(key) ?? [0, 1];   // nothing in view: keep the last range
      else [y0, y1] = autoRange(lo, hi, Math.max(2, Math.floor(h / tickPx)));
      if (!(y1 > y0)) y1 = y0 + 1;
      this.prevRange.set(key, [y0, y1]);
      const ky = h / (y1 - y0), yBase = top + h;
      const ys = niceStep(y1 - y0, Math.max(2, Math.floor(h / tickPx)));
      const ticks = [];
      for (let k = Math.ceil(y0 / ys - 1e-6); k * ys <= y1 + ys * 1e-6; k++) ticks.push(k * ys);   // integer steps: no drift
      return { chans, top, h, y0, y1, ys, ticks, Y: (v) => yBase - (v - y0) * ky };
    });
    if (!split) this.yRange = [this.lanes[0].y0, this.lanes[0].y1];
    this.split = split;

    // ---- time ticks
    const minPx = 80 * dpr;
    const tsStep = TIME_STEPS.find((st) => st / spp >= minPx) ?? TIME_STEPS[TIME_STEPS.length - 1];
    const tTicks = [];
    for (let t = Math.ceil(tStart / tsStep) * tsStep; t <= tEnd; t += tsStep) tTicks.push(t);

    // ---- axis labels (outside the plot area)
    ctx.font = `${Math.round(11 * dpr)}px system-ui, sans-serif`;
    ctx.fillStyle = theme.muted;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (const ln of this.lanes) {
      const { ys, top, h } = ln;
      const ydec = Math.max(0, -Math.floor(Math.log10(ys) + 1e-9)) + (ys / 10 ** Math.floor(Math.log10(ys)) === 2.5 ? 1 : 0);
      const yLo = top + 6 * dpr, yHi = top + h - 7 * dpr;   // keep labels inside their lane, clear of the time axis
      for (const v of ln.ticks) {
        ctx.fillText(Math.abs(v) < ys * 1e-6 ? "0" : v.toFixed(Math.min(ydec, 8)), padL - 4 * dpr, Math.min(yHi, Math.max(yLo, Math.round(ln.Y(v)))));
      }
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (const t of tTicks) {
      const label = clockLabel(t, tsStep), x = Math.round(padL + (t - tStart) / spp);
      const half = ctx.measureText(label).width / 2;
      if (x + half <= W - 1 && x - half >= 1) ctx.fillText(label, x, padT + ph + 3 * dpr);   // whole labels only
    }

    const gaps = s.gaps;
    if (dense) {
      points = this._rasterDense(L, this.lanes, tTicks, theme);
    } else {
      ctx.lineWidth = Math.max(1, Math.round(dpr));
      for (const ln of this.lanes) {
        const { top, h, Y } = ln;
        // grid
        ctx.strokeStyle = theme.grid;
        ctx.beginPath();
        for (const v of ln.ticks) { const y = Math.round(Y(v)) + 0.5; ctx.moveTo(padL, y); ctx.lineTo(padL + pw, y); }
        for (const t of tTicks) { const x = Math.round(padL + (t - tStart) / spp) + 0.5; ctx.moveTo(x, top); ctx.lineTo(x, top + h); }
        ctx.stroke();
        // gaps (lost batches, outages): shaded; lines break across them
        ctx.fillStyle = theme.gap;
        for (const g of gaps) {
          if (g.t1 < tStart || g.t0 > tEnd) continue;
          const x0 = padL + (g.t0 - tStart) / spp, x1 = padL + (g.t1 - tStart) / spp;
          const w = Math.max(3 * dpr, x1 - x0);
          ctx.fillRect(Math.max(padL, (x0 + x1) / 2 - w / 2), top, Math.min(w, pw), h);
        }
      }
      ctx.lineWidth = 1.25 * dpr;
      ctx.lineJoin = "round";
      for (const ln of this.lanes) {
        // lines: few points, so anti-aliased canvas paths are cheap
        ctx.save();
        ctx.beginPath();
        ctx.rect(padL, ln.top, pw, ln.h);
        ctx.clip();
        for (const c of ln.chans) points += this._strokeSparse(c, i0, i1, L, ln.Y, theme);
        ctx.restore();
      }
    }

    sv.decorate?.(ctx, L, this.lanes, theme);   // alert bands, limit lines (views/index.js)

    // ---- lane frames and names, hover cursor
    ctx.strokeStyle = theme.axis;
    ctx.lineWidth = Math.max(1, Math.round(dpr));
    for (const ln of this.lanes) ctx.strokeRect(padL + 0.5, ln.top + 0.5, pw - 1, ln.h - 1);
    if (split) this._laneNames(L, theme);
    if (!s.len) {
      ctx.fillStyle = theme.muted;
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText("waiting for data…", padL + pw / 2, padT + ph / 2);
    }
    let hover = null;
    if (this.hoverX !== null) {
      const x = this.hoverX * dpr;
      if (x >= padL && x <= padL + pw) {
        const t = tStart + (x - padL) * spp;
        hover = this.sampleAt(t, Math.max(spp * 3, 2.5 / (this.sv.rateHz || 1)));
        ctx.strokeStyle = theme.axis;
        ctx.lineWidth = Math.max(1, Math.round(dpr));
        ctx.beginPath();
        for (const ln of this.lanes) { ctx.moveTo(Math.round(x) + 0.5, ln.top); ctx.lineTo(Math.round(x) + 0.5, ln.top + ln.h); }
        ctx.stroke();
        if (hover) {
          const hx = padL + (hover.t - tStart) / spp;
          for (const ln of this.lanes) {
            for (const c of ln.chans) {
              const v = hover.values[c];
              if (v !== v) continue;
              const y = Math.min(ln.top + ln.h, Math.max(ln.top, ln.Y(v)));
              ctx.fillStyle = theme.palette[c % theme.palette.length];
              ctx.beginPath(); ctx.arc(hx, y, 3 * dpr, 0, 2 * Math.PI); ctx.fill();
            }
          }
        }
      }
    }
    this.hover = hover;
    if (stats) { stats.chartsDrawn++; stats.pointsDrawn += points; }
    return points;
  }

  /** One channel as an anti-aliased canvas path (sparse views); breaks at gaps and NaN. */
  _strokeSparse(c, i0, i1, L, Y, theme) {
    const ctx = this.ctx, s = this.sv.series, cap = s.cap, head = s.head, T = s.t, gaps = s.gaps, dpr = this.dpr;
    const { padL, tStart, spp } = L;
    ctx.strokeStyle = theme.palette[c % theme.palette.length];
    ctx.beginPath();
    let pen = false, points = 0;
    const arr = s.v[c];
    let gi = 0, prevT = -Infinity;
    for (let i = i0; i < i1; i++) {
      let p = head + i; if (p >= cap) p -= cap;
      const t = T[p], v = arr[p];
      while (gi < gaps.length && gaps[gi].t1 <= t) { if (prevT <= gaps[gi].t0) pen = false; gi++; }
      prevT = t;
      if (v !== v) { pen = false; continue; }   // NaN = missing
      const x = padL + (t - tStart) / spp, y = Y(v);
      if (pen) ctx.lineTo(x, y); else { ctx.moveTo(x, y); if (i + 1 >= i1) ctx.lineTo(x + dpr, y); pen = true; }
      points++;
    }
    ctx.stroke();
    return points;
  }

  /** Split view: each lane's channel name and unit in its top-left corner. */
  _laneNames(L, theme) {
    const ctx = this.ctx, dpr = this.dpr, chans = this.sv.channels;
    ctx.font = `600 ${Math.round(11 * dpr)}px system-ui, sans-serif`;
    ctx.textAlign = "left";
    ctx.textBaseline = "top";
    for (const ln of this.lanes) {
      const c = ln.chans[0], ch = chans[c];
      if (!ch || ln.h < 14 * dpr) continue;
      const text = ch.unit ? `${ch.name} (${ch.unit})` : ch.name;
      const x = L.padL + 5 * dpr, y = ln.top + 3 * dpr, w = ctx.measureText(text).width;
      ctx.globalAlpha = 0.8;
      ctx.fillStyle = theme.bg;
      ctx.fillRect(x - 2 * dpr, y - 1 * dpr, w + 4 * dpr, 13 * dpr);
      ctx.globalAlpha = 1;
      ctx.fillStyle = theme.palette[c % theme.palette.length];
      ctx.fillText(text, x, y);
    }
  }

  /**
   * Dense view: the plot area is rasterised in JS into one ImageData. Each pixel
   * column of each channel is one vertical span from the column's min to its max,
   * extended to the previous column's last value so the trace is connected, and
   * clipped to the channel's lane. Skia never strokes a long path, which in
   * software rendering costs more than everything else put together.
   */
  _rasterDense(L, lanes, tTicks, theme) {
    const { pw, ph, padT, tStart, tEnd, spp } = L;
    if (!this.img || this.img.width !== pw || this.img.height !== ph) {
      this.img = this.ctx.createImageData(pw, ph);
      this.px = new Uint32Array(this.img.data.buffer);
    }
    const px = this.px;
    px.fill(solid32(theme.bg, theme.bg));
    const gapC = solid32(theme.gap, theme.bg), gridC = solid32(theme.grid, theme.bg);
    const br = this.breaks;
    br.fill(0);
    for (const g of this.sv.series.gaps) {
      if (g.t1 < tStart || g.t0 > tEnd) continue;
      let x0 = Math.floor((g.t0 - tStart) / spp), x1 = Math.ceil((g.t1 - tStart) / spp);
      if (x1 - x0 < 3) { const m = (x0 + x1) >> 1; x0 = m - 1; x1 = m + 2; }
      x0 = Math.max(0, x0); x1 = Math.min(pw, x1);
      for (const ln of lanes) for (let y = ln.top - padT, ye = y + ln.h; y < ye; y++) px.fill(gapC, y * pw + x0, y * pw + x1);
      const k = Math.floor((g.t1 - tStart) / spp);
      if (k >= 0 && k < pw) br[k] = 1;
    }
    for (const ln of lanes) {
      const r0 = ln.top - padT, r1 = r0 + ln.h;
      for (const v of ln.ticks) {
        const y = Math.round(ln.Y(v)) - padT;
        if (y >= r0 && y < r1) px.fill(gridC, y * pw, y * pw + pw);
      }
      for (const t of tTicks) {
        const x = Math.round((t - tStart) / spp);
        if (x >= 0 && x < pw) for (let y = r0; y < r1; y++) px[y * pw + x] = gridC;
      }
    }
    let points = 0;
    for (const ln of lanes) {
      const Y = ln.Y, ymin = ln.top - padT, ymax = ymin + ln.h - 1;
      for (const c of ln.chans) {
        const col = solid32(theme.palette[c % theme.palette.length], theme.bg);
        const cl = this.colLo[c], ch = this.colHi[c], co = this.colOrd[c];
        let pen = false, prevY = 0;
        for (let k = 0; k < pw; k++) {
          if (br[k]) pen = false;
          const lo = cl[k];
          if (lo !== lo) continue;   // empty column: the next span bridges it
          const yTop = Math.round(Y(ch[k])) - padT, yBot = Math.round(Y(lo)) - padT;
          let y0 = yTop, y1 = yBot;
          if (pen) { if (prevY < y0) y0 = prevY; if (prevY > y1) y1 = prevY; }
          prevY = co[k] ? yBot : yTop;   // the value that came last in this column
          pen = true;
          points += yTop === yBot ? 1 : 2;
          if (y0 < ymin) y0 = ymin;
          if (y1 > ymax) y1 = ymax;
          for (let y = y0, i = y0 * pw + k; y <= y1; y++, i += pw) px[i] = col;
        }
      }
    }
    this.ctx.putImageData(this.img, L.padL, padT);
    return points;
  }

  /** The sample nearest to time t (within maxDist s, or any when maxDist is Infinity). */
  sampleAt(t, maxDist = Infinity) {
    const s = this.sv.series;
    if (!s.len) return null;
    let i = s.lowerBound(t);
    if (i >= s.len) i = s.len - 1;
    if (i > 0 && Math.abs(s.timeAt(i - 1) - t) <= Math.abs(s.timeAt(i) - t)) i--;
    const ti = s.timeAt(i);
    if (Math.abs(ti - t) > maxDist) return { t, values: new Array(s.nch).fill(NaN), index: -1 };
    const values = [];
    for (let c = 0; c < s.nch; c++) values.push(s.valueAt(c, i));
    return { t: ti, values, index: i };
  }
}
