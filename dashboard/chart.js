// Canvas line chart for one stream: all channels share the time axis and the Y axis.
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
function solid32(css, bgCss) {
  const [r, g, b, a] = rgba(css), [R, G, B] = rgba(bgCss);
  return pack(Math.round(r * a + R * (1 - a)), Math.round(g * a + G * (1 - a)), Math.round(b * a + B * (1 - a)));
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

    ctx.fillStyle = theme.bg;
    ctx.fillRect(0, 0, W, H);

    // ---- which samples are in view
    let i0 = s.lowerBound(tStart);
    let i1 = s.lowerBound(tEnd + 1e-9);
    const dense = i1 - i0 > 2 * pw;
    if (!dense) { if (i0 > 0) i0--; if (i1 < s.len) i1++; }   // one beyond each edge: lines reach the border
    let lo = Infinity, hi = -Infinity;
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
      }
    } else {
      for (const c of shown) {
        const arr = s.v[c];
        for (let i = i0; i < i1; i++) {
          let p = head + i; if (p >= cap) p -= cap;
          const v = arr[p];
          if (v < lo) lo = v;
          if (v > hi) hi = v;
        }
      }
    }

    // ---- Y range
    let y0, y1;
    if (sv.yMode === "fixed") { [y0, y1] = sv.yFixed; }
    else if (lo === Infinity) { [y0, y1] = this.yRange; }
    else {
      if (hi - lo < 1e-9 * Math.max(1, Math.abs(hi))) { lo -= 1; hi += 1; }
      const padY = (hi - lo) * 0.05;
      const step = niceStep(hi - lo + 2 * padY, Math.max(2, Math.floor(ph / (40 * dpr))));
      y0 = Math.floor((lo - padY) / step) * step;
      y1 = Math.ceil((hi + padY) / step) * step;
    }
    if (!(y1 > y0)) y1 = y0 + 1;
    this.yRange = [y0, y1];
    const ky = ph / (y1 - y0), yBase = padT + ph;
    const Y = (v) => yBase - (v - y0) * ky;

    // ---- ticks
    const ys = niceStep(y1 - y0, Math.max(2, Math.floor(ph / (40 * dpr))));
    const ydec = Math.max(0, -Math.floor(Math.log10(ys) + 1e-9)) + (ys / 10 ** Math.floor(Math.log10(ys)) === 2.5 ? 1 : 0);
    const yTicks = [];
    for (let v = Math.ceil(y0 / ys) * ys; v <= y1 + ys * 1e-6; v += ys) yTicks.push(v);
    const minPx = 80 * dpr;
    const tsStep = TIME_STEPS.find((st) => st / spp >= minPx) ?? TIME_STEPS[TIME_STEPS.length - 1];
    const tTicks = [];
    for (let t = Math.ceil(tStart / tsStep) * tsStep; t <= tEnd; t += tsStep) tTicks.push(t);

    // ---- axis labels (outside the plot area)
    ctx.font = `${Math.round(11 * dpr)}px system-ui, sans-serif`;
    ctx.fillStyle = theme.muted;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    const yLo = padT + 6 * dpr, yHi = padT + ph - 7 * dpr;   // keep labels clear of the time axis
    for (const v of yTicks) ctx.fillText(Math.abs(v) < ys * 1e-6 ? "0" : v.toFixed(Math.min(ydec, 8)), padL - 4 * dpr, Math.min(yHi, Math.max(yLo, Math.round(Y(v)))));
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    for (const t of tTicks) {
      const label = clockLabel(t, tsStep), x = Math.round(padL + (t - tStart) / spp);
      const half = ctx.measureText(label).width / 2;
      if (x + half <= W - 1 && x - half >= 1) ctx.fillText(label, x, padT + ph + 3 * dpr);   // whole labels only
    }

    const gaps = s.gaps;
    if (dense) {
      points = this._rasterDense(L, shown, Y, yTicks, tTicks, theme);
    } else {
      // grid
      ctx.lineWidth = Math.max(1, Math.round(dpr));
      ctx.strokeStyle = theme.grid;
      ctx.beginPath();
      for (const v of yTicks) { const y = Math.round(Y(v)) + 0.5; ctx.moveTo(padL, y); ctx.lineTo(padL + pw, y); }
      for (const t of tTicks) { const x = Math.round(padL + (t - tStart) / spp) + 0.5; ctx.moveTo(x, padT); ctx.lineTo(x, padT + ph); }
      ctx.stroke();
      // gaps (lost batches, outages): shaded; lines break across them
      ctx.fillStyle = theme.gap;
      for (const g of gaps) {
        if (g.t1 < tStart || g.t0 > tEnd) continue;
        const x0 = padL + (g.t0 - tStart) / spp, x1 = padL + (g.t1 - tStart) / spp;
        const w = Math.max(3 * dpr, x1 - x0);
        ctx.fillRect(Math.max(padL, (x0 + x1) / 2 - w / 2), padT, Math.min(w, pw), ph);
      }
      // lines: few points, so anti-aliased canvas paths are cheap
      ctx.save();
      ctx.beginPath();
      ctx.rect(padL, padT, pw, ph);
      ctx.clip();
      ctx.lineWidth = 1.25 * dpr;
      ctx.lineJoin = "round";
      for (const c of shown) {
        ctx.strokeStyle = theme.palette[c % theme.palette.length];
        ctx.beginPath();
        let pen = false;
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
      }
      ctx.restore();
    }

    // ---- frame and hover cursor
    ctx.strokeStyle = theme.axis;
    ctx.lineWidth = Math.max(1, Math.round(dpr));
    ctx.strokeRect(padL + 0.5, padT + 0.5, pw - 1, ph - 1);
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
        ctx.beginPath();
        ctx.moveTo(Math.round(x) + 0.5, padT); ctx.lineTo(Math.round(x) + 0.5, padT + ph);
        ctx.stroke();
        if (hover) {
          const hx = padL + (hover.t - tStart) / spp;
          for (const c of shown) {
            const v = hover.values[c];
            if (v !== v) continue;
            ctx.fillStyle = theme.palette[c % theme.palette.length];
            ctx.beginPath(); ctx.arc(hx, Y(v), 3 * dpr, 0, 2 * Math.PI); ctx.fill();
          }
        }
      }
    }
    this.hover = hover;
    if (stats) { stats.chartsDrawn++; stats.pointsDrawn += points; }
    return points;
  }

  /**
   * Dense view: the plot area is rasterised in JS into one ImageData. Each pixel
   * column of each channel is one vertical span from the column's min to its max,
   * extended to the previous column's last value so the trace is connected.
   * Skia never strokes a long path, which in software rendering costs more than
   * everything else put together.
   */
  _rasterDense(L, shown, Y, yTicks, tTicks, theme) {
    const { pw, ph, padL, padT, tStart, tEnd, spp } = L;
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
      for (let y = 0; y < ph; y++) px.fill(gapC, y * pw + x0, y * pw + x1);
      const k = Math.floor((g.t1 - tStart) / spp);
      if (k >= 0 && k < pw) br[k] = 1;
    }
    for (const v of yTicks) {
      const y = Math.round(Y(v)) - padT;
      if (y >= 0 && y < ph) px.fill(gridC, y * pw, y * pw + pw);
    }
    for (const t of tTicks) {
      const x = Math.round((t - tStart) / spp);
      if (x >= 0 && x < pw) for (let y = 0; y < ph; y++) px[y * pw + x] = gridC;
    }
    let points = 0;
    const ymax = ph - 1;
    for (const c of shown) {
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
        if (y0 < 0) y0 = 0;
        if (y1 > ymax) y1 = ymax;
        for (let y = y0, i = y0 * pw + k; y <= y1; y++, i += pw) px[i] = col;
      }
    }
    this.ctx.putImageData(this.img, padL, padT);
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
