// Small helpers the views share.

export function h(tag, attrs = {}, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids) if (kid !== null && kid !== undefined) el.append(kid);
  return el;
}

/** A JSON value kept in localStorage, or `fallback` (nothing stored, unreadable, storage off). */
export function loadJSON(key, fallback) {
  try { const v = JSON.parse(localStorage.getItem(key)); return v ?? fallback; } catch { return fallback; }
}
export function saveJSON(key, value) {
  try { localStorage.setItem(key, JSON.stringify(value)); } catch { /* storage off */ }
}

/**
 * One module worker for every Spectrum view (started on first use). Requests are
 * answered in order; the samples are transferred, not copied. Where a worker
 * cannot start (an old browser, a restrictive CSP), the same code runs inline.
 */
export class SpectrumWorkerPool {
  constructor(url, inline) {
    this.url = url;
    this.inline = inline;
    this.worker = undefined;
    this.waiting = new Map();
    this.next = 0;
    this.inlineMs = 0;   // main-thread time spent computing inline (benchmarks)
  }

  _start() {
    try {
      this.worker = new Worker(this.url, { type: "module" });
      this.worker.onmessage = (ev) => {
        const cb = this.waiting.get(ev.data.id);
        this.waiting.delete(ev.data.id);
        cb?.(ev.data);
      };
      this.worker.onerror = () => { this.worker = null; for (const cb of this.waiting.values()) cb({ out: [], ms: 0 }); this.waiting.clear(); };
    } catch {
      this.worker = null;
    }
  }

  run(req, cb) {
    if (this.worker === undefined) this._start();
    if (this.worker) {
      const id = ++this.next;
      this.waiting.set(id, cb);
      this.worker.postMessage({ id, ...req }, [req.t.buffer, ...req.chans.map((c) => c.v.buffer)]);
      return;
    }
    const t0 = performance.now();
    const res = this.inline(req.t, req.chans.map((ch) => ch.v), req.nfft, req.maxSegs);
    const out = req.chans.map((ch, i) => ({ c: ch.c, s: res[i] }));
    const ms = performance.now() - t0;
    this.inlineMs += ms;
    cb({ out, ms });
  }
}
