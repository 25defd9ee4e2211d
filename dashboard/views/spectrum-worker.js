// Computes spectra for the Spectrum views off the main thread. One worker serves
// every card: a request carries the samples of the channels shown (transferred,
// not copied) and comes back as one amplitude array per channel.
import { spectra } from "../fft.js";

self.onmessage = (ev) => {
  const { id, t, chans, nfft, maxSegs } = ev.data;
  const t0 = performance.now();
  const res = spectra(t, chans.map((ch) => ch.v), nfft, maxSegs);
  const out = chans.map((ch, i) => ({ c: ch.c, s: res[i] }));
  // The input buffers go back too, so the page can reuse them (no garbage per refresh).
  const transfer = [...res.filter(Boolean).map((s) => s.amp.buffer), t.buffer, ...chans.map((ch) => ch.v.buffer)];
  self.postMessage({ id, out, ms: performance.now() - t0, t, chans }, transfer);
};
