// Per-stream ring buffer of typed arrays: one Float64Array of timestamps and one
// Float32Array per channel, all with the same fixed capacity. Capacity is sized
// for the longest selectable window at the stream's rate, with a hard cap, so
// memory never grows without bound. Logical index 0 is the oldest sample.

export const MAX_WINDOW_S = 600;                 // longest selectable window (10 min)
export const MAX_BYTES_PER_STREAM = 48 * 2 ** 20; // hard cap per stream
export const MAX_SAMPLES = 1 << 21;               // hard cap per channel
export const MIN_SAMPLES = 1024;
export const MAX_GAPS = 512;

export function capacityFor(rateHz, nch) {
  const rate = rateHz > 0 ? rateHz : 100;
  const want = Math.ceil(rate * MAX_WINDOW_S * 1.1) + 1024;
  const hard = Math.min(MAX_SAMPLES, Math.floor(MAX_BYTES_PER_STREAM / (8 + 4 * Math.max(1, nch))));
  return Math.max(MIN_SAMPLES, Math.min(want, hard));
}

export class Series {
  constructor(nch, cap) {
    this.nch = nch;
    this.cap = cap;
    this.t = new Float64Array(cap);
    this.v = [];
    for (let c = 0; c < nch; c++) this.v.push(new Float32Array(cap));
    this.head = 0;   // physical index of the oldest sample
    this.len = 0;
    this.gaps = [];  // [{t0, t1}] sorted: data missing between t0 and t1 (exclusive)
    this.version = 0; // bumps on every change (charts compare it to know they're dirty)
  }

  get bytes() { return this.cap * (8 + 4 * this.nch); }
  phys(i) { const p = this.head + i; return p >= this.cap ? p - this.cap : p; }
  get tFirst() { return this.len ? this.t[this.head] : NaN; }
  get tLast() { return this.len ? this.t[this.phys(this.len - 1)] : NaN; }
  timeAt(i) { return this.t[this.phys(i)]; }
  valueAt(c, i) { return this.v[c][this.phys(i)]; }

  /** Append samples [from, N) of a channel-major batch with C channels. */
  push(ts, vals, C, N, from = 0) {
    const cap = this.cap, nch = this.nch, t = this.t, v = this.v;
    let w = this.head + this.len;
    if (w >= cap) w -= cap;
    for (let i = from; i < N; i++) {
      t[w] = ts[i];
      for (let c = 0; c < nch; c++) v[c][w] = c < C ? vals[c * N + i] : NaN;
      if (++w === cap) w = 0;
    }
    const added = N - from;
    const total = this.len + added;
    if (total > cap) {
      const over = total - cap;
      this.head += over;
      if (this.head >= cap) this.head %= cap;
      this.len = cap;
    } else {
      this.len = total;
    }
    if (this.gaps.length && this.gaps[0].t1 < this.tFirst) this.gaps = this.gaps.filter((g) => g.t1 >= this.tFirst);
    this.version++;
  }

  addGap(t0, t1) {
    if (!(t1 > t0)) return;
    this.gaps.push({ t0, t1 });
    if (this.gaps.length > MAX_GAPS) this.gaps.shift();
    this.version++;
  }

  /** First logical index with t >= x (len if none). */
  lowerBound(x) {
    let lo = 0, hi = this.len;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.t[this.phys(mid)] < x) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  /** A copy with a new capacity and/or more channels (keeps the newest samples). */
  resized(nch, cap) {
    const s = new Series(Math.max(nch, this.nch), cap);
    const keep = Math.min(this.len, cap);
    const start = this.len - keep;
    for (let i = 0; i < keep; i++) {
      const p = this.phys(start + i);
      s.t[i] = this.t[p];
      for (let c = 0; c < s.nch; c++) s.v[c][i] = c < this.nch ? this.v[c][p] : NaN;
    }
    s.len = keep;
    s.gaps = this.gaps.slice();
    s.version = this.version + 1;
    return s;
  }
}
