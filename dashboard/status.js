// What the dashboard says about each stream and about its own connection, in words
// (docs/dashboard.md, "Status"). Pure functions plus one small probe; app.js wires them.

// Stream statuses as the server sends them (sensorstream/protocol.py STREAM_STATUSES);
// anything else is shown as itself, never as LIVE.
const WORDS = { live: "LIVE", stale: "STALE", disconnected: "DISCONNECTED", failed: "FAILED" };
const MAX_REASON = 60;   // characters of a failure reason on the badge (all of it in the tooltip)

function seconds(s) {
  if (!Number.isFinite(s)) return "";
  return s < 90 ? `${Math.max(0, Math.round(s))} s` : s < 5400 ? `${Math.round(s / 60)} min` : `${Math.round(s / 3600)} h`;
}

/**
 * The badge of a stream card: {status, text, title}. `status` is the CSS class and
 * the card's data-status. `connected`: the page has a live connection to the server
 * (without it nothing is live, whatever the last catalog said); `ageS`: seconds since
 * the stream's newest data.
 */
export function streamBadge(info, { connected, ageS }) {
  if (!connected) {
    return { status: "offline", text: "CONNECTION LOST",
             title: "The server cannot be reached: this is the data from before the connection was lost." };
  }
  const s = info?.status;
  switch (s) {
    case "live":
      return { status: "live", text: "LIVE", title: "" };
    case "stale": {
      const age = seconds(ageS);
      return { status: "stale", text: age ? `STALE · no data for ${age}` : "STALE · no data",
               title: "The source is connected but has sent no samples for a while (a silent device, or a format it cannot read)." };
    }
    case "disconnected":
      return { status: "disconnected", text: "DISCONNECTED", title: "The source lost its device and is retrying." };
    case "failed": {
      const why = typeof info.error === "string" && info.error ? info.error : "";
      const short = why.length > MAX_REASON ? `${why.slice(0, MAX_REASON - 1)}…` : why;
      return { status: "failed", text: short ? `FAILED: ${short}` : "FAILED",
               title: `The source stopped with an error${why ? `: ${why}` : ""}. The server restarts it.` };
    }
    default:
      return { status: "unknown", text: String(s ?? "unknown").toUpperCase().slice(0, 24), title: "" };
  }
}

export const NO_SOURCES =
  "This server has no sources. Start it with --simulate (built-in simulators), --serial PORT or --device PROFILE.toml.";

/** The header text when the server refuses the page's token (null: no such problem). */
export function accessText(problem) {
  if (problem === "missing") return "This server needs an access token: open the link with ?token=…";
  if (problem === "wrong") return "This server refused the access token in the link: check the ?token=… part";
  return null;
}

/**
 * Why a WebSocket may be failing before its hello: a browser cannot see the HTTP
 * status of a refused upgrade, so after a failed attempt this asks /metrics, which
 * takes the same token, with a HEAD request. 401 means the token is missing or wrong.
 * At most one probe at a time; the result stays until the next hello or probe.
 */
export class AccessProbe {
  constructor(onChange, { location = window.location, fetchFn = (...a) => fetch(...a) } = {}) {
    this.onChange = onChange;
    this.token = new URLSearchParams(location.search).get("token");
    this.url = new URL("metrics", location.href);
    if (this.token !== null) this.url.searchParams.set("token", this.token);
    this.fetchFn = fetchFn;
    this.problem = null;     // null | "missing" | "wrong"
    this.inFlight = false;
  }

  /** A connection attempt failed before the server's hello. */
  failed() {
    if (this.inFlight) return;
    this.inFlight = true;
    this.fetchFn(this.url, { method: "HEAD", cache: "no-store" })
      .then((r) => this._set(r.status === 401 ? (this.token ? "wrong" : "missing") : null))
      .catch(() => { /* server down: the reconnect text already says so */ })
      .finally(() => { this.inFlight = false; });
  }

  /** The server said hello: whatever the token problem was, it is gone. */
  connected() { this._set(null); }

  _set(problem) {
    if (problem === this.problem) return;
    this.problem = problem;
    this.onChange?.(problem);
  }
}
