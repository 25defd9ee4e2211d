// CSV export of a stream's buffered samples.
// Columns: ISO 8601 time (UTC, microseconds), Unix seconds, one column per channel
// with its unit in the header ("ax (m/s²)"). NaN (missing) is an empty cell.

function csvField(s) {
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** Shortest decimal that reads back as the same float32. */
export function f32String(v) {
  if (v !== v) return "";
  if (v === 0) return "0";
  for (let p = 6; p <= 9; p++) {
    const s = v.toPrecision(p);
    if (Math.fround(Number(s)) === v) return String(Number(s));
  }
  return String(v);
}

export function isoMicros(t) {
  const ms = Math.floor(t * 1000);
  const base = new Date(ms).toISOString().slice(0, 19);   // YYYY-MM-DDTHH:MM:SS
  let us = Math.round((t - Math.floor(t)) * 1e6);
  let sec = base;
  if (us >= 1000000) { sec = new Date((Math.floor(t) + 1) * 1000).toISOString().slice(0, 19); us = 0; }
  return `${sec}.${String(us).padStart(6, "0")}Z`;
}

export function header(channels) {
  const cols = ["time", "unix_s"];
  for (const ch of channels) cols.push(ch.unit ? `${ch.name} (${ch.unit})` : ch.name);
  return cols.map(csvField).join(",");
}

/** CSV text for samples of `series` with tStart <= t <= tEnd (all when omitted). */
export function seriesToCsv(series, channels, tStart = -Infinity, tEnd = Infinity) {
  const lines = [header(channels)];
  const i0 = series.lowerBound(tStart);
  // Up to and including tEnd (at Unix-time magnitudes `tEnd + 1e-9` is tEnd itself).
  let i1 = series.lowerBound(tEnd);
  while (i1 < series.len && series.t[series.phys(i1)] <= tEnd) i1++;
  const nch = Math.min(series.nch, channels.length);
  for (let i = i0; i < i1; i++) {
    const p = series.phys(i);
    const t = series.t[p];
    let line = `${isoMicros(t)},${t.toFixed(6)}`;
    for (let c = 0; c < nch; c++) line += "," + f32String(series.v[c][p]);
    lines.push(line);
  }
  return lines.join("\n") + "\n";
}

export function downloadText(text, filename, type = "text/csv") {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
