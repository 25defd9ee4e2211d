// Computes spectra for the Spectrum views off the main thread. One worker serves
// every card: a request carries the samples of the channels shown (transferred,
// not copied) and comes back as one amplitude array per channel.
import { spectrum } from "../fft.js";

self.onmessage = (ev) => {
  const { id, seq, t, chans, nfft, maxSegs } = ev.data;
  const t0 = performance.now();
  const out = [];
  const transfer = [];
  for (const { c, v } of chans) {
    const s = spectrum(t, v, nfft, maxSegs);
    out.push({ c, s });
    if (s) transfer.push(s.amp.buffer);
  }
  self.postMessage({ id, seq, out, ms: performance.now() - t0 }, transfer);
};
