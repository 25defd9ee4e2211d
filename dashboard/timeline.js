// Playback timeline for a replay server (`sensorstream replay`, docs/recording.md):
// play/pause, speed and a seek bar. On every connection it asks the server for
// the playback state; a server that is not a replay answers `not_replay` and the
// timeline stays hidden. Every change (from this page or another) arrives as a
// `playback` message, so all viewers show the same state.

const SPEEDS = [0.25, 0.5, 1, 2, 4, 10];
const REF = "timeline";

function fmtTime(t) {
  if (!Number.isFinite(t)) return "–";
  return new Date(t * 1000).toISOString().slice(11, 23);
}

export class Timeline {
  /**
   * @param {HTMLElement} root   an empty element to fill (hidden until the server is a replay)
   * @param {object} hooks       send(msg), onJump() (time jumped: the view's clock must be re-learnt),
   *                             setViewPaused(bool) (freeze the charts while playback is paused)
   */
  constructor(root, hooks) {
    this.root = root;
    this.hooks = hooks;
    this.state = null;
    this.at = 0;            // performance.now() when `state` arrived
    this.dragging = false;
    this.checked = false;   // the server answered the status request (replay or not)
    this.build();
  }

  build() {
    const el = (tag, attrs, text) => {
      const e = document.createElement(tag);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
      if (text) e.textContent = text;
      return e;
    };
    this.playBtn = el("button", { class: "tool", "data-testid": "playback-toggle", title: "Play/pause the recording" }, "Pause");
    this.speedSel = el("select", { "data-testid": "playback-speed", "aria-label": "Playback speed" });
    for (const s of SPEEDS) this.speedSel.append(el("option", { value: String(s) }, `${s}×`));
    this.seek = el("input", { type: "range", min: "0", max: "1000", step: "1", value: "0", "data-testid": "playback-seek", "aria-label": "Position in the recording" });
    this.posEl = el("span", { class: "pos", "data-testid": "playback-position" });
    this.fileEl = el("span", { class: "file", "data-testid": "playback-file" });
    this.root.append(this.fileEl, this.playBtn, this.speedSel, this.seek, this.posEl);
    this.playBtn.addEventListener("click", () => this.send(this.state && !this.state.paused ? { action: "pause" } : { action: "resume" }));
    this.speedSel.addEventListener("change", () => this.send({ action: "speed", speed: Number(this.speedSel.value) }));
    this.seek.addEventListener("input", () => { this.dragging = true; this.posEl.textContent = fmtTime(this.seekTime()); });
    this.seek.addEventListener("change", () => { this.dragging = false; this.send({ action: "seek", t: this.seekTime() }); });
    this.root.hidden = true;
  }

  send(fields) {
    this.hooks.send({ type: "playback", ref: REF, ...fields });
  }

  seekTime() {
    const s = this.state;
    return s ? s.start + (s.end - s.start) * (Number(this.seek.value) / 1000) : 0;
  }

  /** Recording time now, extrapolated from the last state. */
  position() {
    const s = this.state;
    if (!s) return NaN;
    if (s.paused || s.ended || !(s.speed > 0)) return s.position;
    return Math.min(s.end, s.position + ((performance.now() - this.at) / 1000) * s.speed);
  }

  onHello() {
    this.send({ action: "status" });
  }

  /** A text message; true if it was the timeline's (the dashboard does nothing more with it). */
  onText(msg) {
    if (msg.type === "error" && msg.ref === REF) {
      if (msg.code === "not_replay") { this.root.hidden = true; this.checked = true; return true; }
      return false;
    }
    if (msg.type !== "playback" || !msg.state) return false;
    const prev = this.state;
    const expected = prev ? this.expected(prev) : NaN;
    const s = msg.state;
    this.state = s;
    this.checked = true;
    this.at = performance.now();
    this.root.hidden = false;
    document.body.classList.add("replay");
    this.fileEl.textContent = s.file ?? "";
    this.playBtn.textContent = s.paused || s.ended ? "Play" : "Pause";
    this.playBtn.setAttribute("aria-pressed", String(!!s.paused));
    this.root.dataset.paused = String(!!s.paused);
    this.root.dataset.speed = String(s.speed);
    if (!SPEEDS.includes(s.speed)) this.speedSel.append(new Option(`${s.speed}×`, String(s.speed)));
    this.speedSel.value = String(s.speed);
    // The charts follow the recording's clock: frozen while paused, re-learnt after a jump.
    if (prev && (s.paused !== prev.paused || s.speed !== prev.speed || Math.abs(s.position - expected) > 0.5)) this.hooks.onJump();
    if (!prev || s.paused !== prev.paused) this.hooks.setViewPaused(!!s.paused);
    this.update();
    return true;
  }

  expected(prev) {
    if (prev.paused || prev.ended || !(prev.speed > 0)) return prev.position;
    return prev.position + ((performance.now() - this.at) / 1000) * prev.speed;
  }

  /** Seek bar and position text; called a few times a second. */
  update() {
    const s = this.state;
    if (!s || this.dragging) return;
    const p = this.position();
    const span = s.end - s.start;
    this.seek.value = String(span > 0 ? Math.round(((p - s.start) / span) * 1000) : 0);
    this.posEl.textContent = `${fmtTime(p)} / ${fmtTime(s.end)}`;
  }
}
