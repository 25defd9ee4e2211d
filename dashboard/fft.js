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
 * Samples (t seconds, values) onto an even grid. Returns {x, fs, resampled}:
 * when the spacing is even (every step within 5 % of the median step) the
 * values are used as they are; otherwise they are linearly interpolated onto
 * a grid at the median step, ending at the last sample. NaN (missing) values
 * are bridged by interpolation between their neighbours either way.
 */
export function evenGrid(t, v) {
  const n = t.length;
  const steps = new Float64Array(Math.max(0, n - 1));
  for (let i = 1; i < n; i++) steps[i - 1] = t[i] - t[i - 1];
  const sorted = steps.slice().sort();
  const med = sorted.length ? sorted[sorted.length >> 1] : 0;
  if (!(med > 0)) return { x: fillNaN(Float64Array.from(v)), fs: NaN, resampled: false };
  let even = true;
  for (let i = 0; i < steps.length; i++) if (Math.abs(steps[i] - med) > 0.05 * med) { even = false; break; }
  if (even) return { x: fillNaN(Float64Array.from(v)), fs: 1 / med, resampled: false };
  // Keep only finite samples, then interpolate at the grid points.
  const tt = [], vv = [];
  for (let i = 0; i < n; i++) if (v[i] === v[i]) { tt.push(t[i]); vv.push(v[i]); }
  const m = Math.floor((t[n - 1] - t[0]) / med) + 1;
  const x = new Float64Array(m);
  if (!tt.length) return { x, fs: 1 / med, resampled: true };
  const t0 = t[n - 1] - (m - 1) * med;
  let j = 0;
  for (let k = 0; k < m; k++) {
    const tk = t0 + k * med;
    while (j < tt.length - 1 && tt[j + 1] < tk) j++;
    if (tk <= tt[0]) x[k] = vv[0];
    else if (j >= tt.length - 1) x[k] = vv[tt.length - 1];
    else { const f = (tk - tt[j]) / (tt[j + 1] - tt[j] || 1); x[k] = vv[j] + f * (vv[j + 1] - vv[j]); }
  }
  return { x, fs: 1 / med, resampled: true };
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
 * The spectrum of one channel's samples: {amp, fs, nfft, segs, resampled, df}.
 * nfft is `maxN` or, with fewer samples, the largest power of two they fill.
 */
export function spectrum(t, v, maxN = 4096, maxSegs = 8) {
  const { x, fs, resampled } = evenGrid(t, v);
  const nfft = Math.min(maxN, pow2Floor(x.length));
  if (nfft < 16 || !(fs > 0)) return null;
  const { amp, segs } = welch(x, nfft, maxSegs);
  return { amp, fs, nfft, segs, resampled, df: fs / nfft };
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
