// Spectra for the dashboard's Spectrum view: our own radix-2 FFT, a Hann window,
// Welch averaging, and resampling of unevenly spaced samples onto an even grid.
// Pure functions on typed arrays (no DOM), so the same module runs in the Web
// Worker (views/spectrum-worker.js) and, where workers are unavailable, inline.

/** Largest power of two <= n (0 for n < 1). */
export function pow2Floor(n) {
  return n < 1 ? 0 : 2 ** Math.floor(Math.log2(n));
}

const hannCache = new Map();
/** Periodic Hann window of length n (cached: one per size in use). */
export function hann(n) {
  let w = hannCache.get(n);
  if (!w) {
    w = new Float64Array(n);
    for (let i = 0; i < n; i++) w[i] = 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / n);
    hannCache.set(n, w);
  }
  return w;
}

const twiddleCache = new Map();
function twiddles(n) {
  let tw = twiddleCache.get(n);
  if (!tw) {
    tw = { cos: new Float64Array(n / 2), sin: new Float64Array(n / 2), rev: new Uint32Array(n) };
    for (let i = 0; i < n / 2; i++) { tw.cos[i] = Math.cos((2 * Math.PI * i) / n); tw.sin[i] = -Math.sin((2 * Math.PI * i) / n); }
    const bits = Math.log2(n);
    for (let i = 0; i < n; i++) {
      let r = 0;
      for (let b = 0, x = i; b < bits; b++, x >>= 1) r = (r << 1) | (x & 1);
      tw.rev[i] = r;
    }
    twiddleCache.set(n, tw);
  }
  return tw;
}

/** In-place complex FFT (iterative radix-2); n = re.length must be a power of two. */
export function fft(re, im) {
  const n = re.length;
  if (n < 2) return;
  const { cos, sin, rev } = twiddles(n);
  for (let i = 0; i < n; i++) {
    const j = rev[i];
    if (j > i) { let t = re[i]; re[i] = re[j]; re[j] = t; t = im[i]; im[i] = im[j]; im[j] = t; }
  }
  for (let size = 2; size <= n; size <<= 1) {
    const half = size >> 1, step = n / size;
    for (let start = 0; start < n; start += size) {
      for (let k = 0, t = 0; k < half; k++, t += step) {
        const a = start + k, b = a + half;
        const wr = cos[t], wi = sin[t];
        const xr = re[b] * wr - im[b] * wi, xi = re[b] * wi + im[b] * wr;
        re[b] = re[a] - xr; im[b] = im[a] - xi;
        re[a] += xr; im[a] += xi;
      }
    }
  }
}

/**
 * How to put samples taken at times t onto an even grid: {even, step, t0, m}.
 * Even: every step within 5 % of the median step (the values are used as they
 * are). Otherwise: m points at the median step, ending at the last sample.
 */
export function gridOf(t) {
  const n = t.length;
  if (n < 2) return { even: true, step: NaN, t0: t[0], m: n };
  // The median step from at most 4,097 of the steps (sorting them all costs more than the FFT).
  const every = Math.max(1, Math.floor((n - 1) / 4096));
  const sample = [];
  for (let i = 1; i < n; i += every) sample.push(t[i] - t[i - 1]);
  sample.sort((a, b) => a - b);
  const step = sample[sample.length >> 1];
  if (!(step > 0)) return { even: true, step: NaN, t0: t[0], m: n };
  let even = true;
  for (let i = 1; i < n; i++) { const d = t[i] - t[i - 1]; if (d > 1.05 * step || d < 0.95 * step) { even = false; break; } }
  if (even) return { even, step, t0: t[0], m: n };
  const m = Math.floor((t[n - 1] - t[0]) / step) + 1;
  return { even, step, t0: t[n - 1] - (m - 1) * step, m };
}

/** One channel's values on the grid (linear interpolation; NaN bridged by its neighbours). */
export function onGrid(t, v, g) {
  if (g.even) return fillNaN(Float64Array.from(v));
  const n = t.length, x = new Float64Array(g.m);
  let j = -1;   // index of the last finite sample at or before the grid point
  let next = 0;  // first finite sample after j
  const finiteFrom = (i) => { while (i < n && v[i] !== v[i]) i++; return i; };
  next = finiteFrom(0);
  if (next >= n) return x;
  for (let k = 0; k < g.m; k++) {
    const tk = g.t0 + k * g.step;
    while (next < n && t[next] <= tk) { j = next; next = finiteFrom(next + 1); }
    if (j < 0) x[k] = v[next];
    else if (next >= n) x[k] = v[j];
    else x[k] = v[j] + ((tk - t[j]) / (t[next] - t[j] || 1)) * (v[next] - v[j]);
  }
  return x;
}

function fillNaN(x) {
  let last = NaN, firstGood = -1;
  for (let i = 0; i < x.length; i++) {
    if (x[i] === x[i]) { if (firstGood < 0) firstGood = i; last = x[i]; continue; }
    let j = i + 1;
    while (j < x.length && x[j] !== x[j]) j++;
    const next = j < x.length ? x[j] : last;
    const prev = last === last ? last : next;
    for (let k = i; k < j; k++) x[k] = prev === prev ? prev + ((next - prev) * (k - i + 1)) / (j - i + 1) : 0;
    i = j - 1;
  }
  return x;
}

/**
 * Welch's method: Hann-windowed segments of nfft samples, 50 % overlap, the
 * newest `maxSegs` of them, each with its mean removed; their power averaged.
 * Returns amplitude per bin (nfft/2 + 1 bins, 0 .. fs/2), scaled so that a sine
 * of amplitude A reads A at its bin.
 */
export function welch(x, nfft, maxSegs = 8) {
  const hop = nfft >> 1;
  const segs = Math.max(1, Math.min(maxSegs, Math.floor((x.length - nfft) / hop) + 1));
  const w = hann(nfft);
  let wsum = 0;
  for (let i = 0; i < nfft; i++) wsum += w[i];
  const re = new Float64Array(nfft), im = new Float64Array(nfft);
  const power = new Float64Array(nfft / 2 + 1);
  const end = x.length;
  for (let s = 0; s < segs; s++) {
    const from = end - nfft - s * hop;
    let mean = 0;
    for (let i = 0; i < nfft; i++) mean += x[from + i];
    mean /= nfft;
    for (let i = 0; i < nfft; i++) { re[i] = (x[from + i] - mean) * w[i]; im[i] = 0; }
    fft(re, im);
    for (let k = 0; k <= nfft / 2; k++) power[k] += re[k] * re[k] + im[k] * im[k];
  }
  const amp = new Float32Array(nfft / 2 + 1);
  const scale = 2 / wsum;
  for (let k = 0; k <= nfft / 2; k++) amp[k] = Math.sqrt(power[k] / segs) * (k === 0 || k === nfft / 2 ? scale / 2 : scale);
  return { amp, segs };
}

/**
 * Welch for two channels at once: one complex FFT carries both real signals
 * (x in the real part, y in the imaginary part), split afterwards by symmetry,
 * which halves the work. Same scaling as `welch`.
 */
export function welchPair(x, y, nfft, maxSegs = 8) {
  const hop = nfft >> 1, half = nfft >> 1;
  const segs = Math.max(1, Math.min(maxSegs, Math.floor((x.length - nfft) / hop) + 1));
  const w = hann(nfft);
  let wsum = 0;
  for (let i = 0; i < nfft; i++) wsum += w[i];
  const re = new Float64Array(nfft), im = new Float64Array(nfft);
  const px = new Float64Array(half + 1), py = new Float64Array(half + 1);
  const end = x.length;
  for (let s = 0; s < segs; s++) {
    const from = end - nfft - s * hop;
    let mx = 0, my = 0;
    for (let i = 0; i < nfft; i++) { mx += x[from + i]; my += y[from + i]; }
    mx /= nfft; my /= nfft;
    for (let i = 0; i < nfft; i++) { re[i] = (x[from + i] - mx) * w[i]; im[i] = (y[from + i] - my) * w[i]; }
    fft(re, im);
    for (let k = 0; k <= half; k++) {
      const j = k === 0 ? 0 : nfft - k;
      const ar = re[k] + re[j], ai = im[k] - im[j], br = re[k] - re[j], bi = im[k] + im[j];
      px[k] += (ar * ar + ai * ai) / 4;
      py[k] += (br * br + bi * bi) / 4;
    }
  }
  const scale = 2 / wsum;
  const amp = (p) => {
    const a = new Float32Array(half + 1);
    for (let k = 0; k <= half; k++) a[k] = Math.sqrt(p[k] / segs) * (k === 0 || k === half ? scale / 2 : scale);
    return a;
  };
  return { ampX: amp(px), ampY: amp(py), segs };
}

/**
 * Spectra of several channels sampled at the same times t (one grid, channels in
 * pairs): an array of {amp, fs, nfft, segs, resampled, df} or null per channel.
 */
export function spectra(t, vs, maxN = 4096, maxSegs = 8) {
  const g = gridOf(t);
  const nfft = Math.min(maxN, pow2Floor(g.m));
  if (nfft < 16 || !(g.step > 0)) return vs.map(() => null);
  const fs = 1 / g.step, meta = { fs, nfft, resampled: !g.even, df: fs / nfft };
  const out = new Array(vs.length).fill(null);
  for (let i = 0; i < vs.length; i += 2) {
    const x = onGrid(t, vs[i], g);
    if (i + 1 < vs.length) {
      const { ampX, ampY, segs } = welchPair(x, onGrid(t, vs[i + 1], g), nfft, maxSegs);
      out[i] = { amp: ampX, segs, ...meta };
      out[i + 1] = { amp: ampY, segs, ...meta };
    } else {
      const { amp, segs } = welch(x, nfft, maxSegs);
      out[i] = { amp, segs, ...meta };
    }
  }
  return out;
}

/** Index of the largest value in amp[from, to) (skipping DC by default). */
export function peakIndex(amp, from = 1, to = amp.length) {
  let best = -1, bv = -Infinity;
  for (let k = Math.max(0, from); k < Math.min(amp.length, to); k++) if (amp[k] > bv) { bv = amp[k]; best = k; }
  return best;
}

/** Peak frequency refined by parabolic interpolation over the neighbouring bins. */
export function peakFrequency(amp, k, df) {
  if (k <= 0 || k >= amp.length - 1) return k * df;
  const a = amp[k - 1], b = amp[k], c = amp[k + 1];
  const den = a - 2 * b + c;
  return (k + (den ? (0.5 * (a - c)) / den : 0)) * df;
}
