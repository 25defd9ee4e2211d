// Talking back to a device (docs/dashboard.md, "Commands"): for a stream whose
// catalog entry says "commands": true, a send box (text with a line ending, or
// hex), a history recalled with ↑/↓, the device's console lines, and the
// profile's [[actions]] as buttons and sliders. Wire messages: docs/protocol.md.

import { h, loadJSON, saveJSON } from "./views/util.js";

const EOLS = [["none", "None"], ["lf", "LF"], ["cr", "CR"], ["crlf", "CR+LF"]];
const HISTORY_MAX = 50;          // commands remembered per stream (and in localStorage)
const CONSOLE_MAX = 200;         // console lines kept on screen per stream
const STORE = "sensorstream.commands";

const load = (key, fallback) => loadJSON(`${STORE}.${key}`, fallback);
const save = (key, value) => saveJSON(`${STORE}.${key}`, value);

/** "RATE {value}\n" with value 250 -> "RATE 250\n" ({{ and }} are braces), like the server's templates. */
export function renderTemplate(template, value) {
  const v = value === undefined || value === null ? "" : String(Number.isInteger(value) ? value : +value);
  return template.replace(/\{\{|\}\}|\{value\}/g, (m) => (m === "{{" ? "{" : m === "}}" ? "}" : v));
}

/** Hex as the server reads it: pairs of digits, separators (space : , -) between bytes. */
export function hexOk(text) {
  const d = text.replace(/[\s:,-]+/g, "");
  return d.length % 2 === 0 && /^[0-9a-fA-F]*$/.test(d) && d.length > 0;
}

export class CommandPanel {
  /**
   * @param {string} streamId
   * @param {(msg: object) => string|null} send  sends a command message, returns its ref (null: not connected)
   */
  constructor(streamId, send) {
    this.id = streamId;
    this.send = send;
    this.history = load(`history.${streamId}`, []);
    this.histPos = null;             // index into history while browsing with ↑/↓
    this.pending = new Map();        // ref -> {label, at}
    this.lines = [];                 // console lines shown (newest last)
    this.replies = [];               // last results, for tests and devtools
    this.build();
  }

  build() {
    this.input = h("input", { type: "text", class: "cmd-text", "data-testid": "cmd-text", placeholder: "Send to device…",
      "aria-label": `Command for ${this.id}`, autocomplete: "off", spellcheck: "false",
      onkeydown: (ev) => this.onKey(ev) });
    this.eolSel = h("select", { "data-testid": "cmd-eol", "aria-label": "Line ending", title: "Line ending",
      onchange: () => save("eol", this.eolSel.value) },
      ...EOLS.map(([v, label]) => h("option", { value: v }, label)));
    this.eolSel.value = load("eol", "lf");
    this.hexBox = h("input", { type: "checkbox", "data-testid": "cmd-hex", onchange: () => this.hexChanged() });
    const hexLabel = h("label", { class: "cmd-hexl", title: "Send bytes written as hex, e.g. 01 03 00 0a" }, this.hexBox, "Hex");
    const sendBtn = h("button", { class: "tool", "data-testid": "cmd-send", onclick: () => this.sendTyped() }, "Send");
    this.status = h("span", { class: "cmd-status", "data-testid": "cmd-status", role: "status", "aria-live": "polite" });
    this.actionsEl = h("div", { class: "cmd-actions", "data-testid": "cmd-actions" });
    this.consoleEl = h("pre", { class: "cmd-console", "data-testid": "cmd-console", "aria-label": `Console of ${this.id}`, tabindex: "0" });
    this.el = h("div", { class: "cmd", "data-testid": "commands", hidden: true },
      this.actionsEl,
      h("div", { class: "cmd-row" }, this.input, this.eolSel, hexLabel, sendBtn, this.status),
      this.consoleEl);
    // Keys typed here are for the box: the page's shortcuts (space, p: pause) stay out.
    this.el.addEventListener("keydown", (ev) => ev.stopPropagation());
    this.hexChanged();
  }

  /** The stream's catalog entry changed: show the panel (or not) and its actions. */
  setInfo(info) {
    const on = info.commands === true;
    this.el.hidden = !on;
    const acts = on && Array.isArray(info.actions) ? info.actions : [];
    const sig = JSON.stringify(acts);
    if (sig !== this.actionsSig) { this.actionsSig = sig; this.buildActions(acts); }
    this.input.disabled = info.status === "disconnected";
    this.input.placeholder = info.status === "disconnected" ? "Device disconnected" : "Send to device…";
  }

  buildActions(actions) {
    this.actionsEl.textContent = "";
    for (const a of actions) {
      if (!a || typeof a.name !== "string" || typeof a.template !== "string") continue;
      if (typeof a.min === "number" && typeof a.max === "number") {
        const out = h("output", { class: "cmd-val" });
        const range = h("input", { type: "range", min: a.min, max: a.max, step: a.step ?? "any",
          "data-testid": `action-${a.name}`, "aria-label": a.name,
          oninput: () => { out.textContent = range.value; },
          onchange: () => this.sendAction(a, +range.value) });
        range.value = String(a.min);
        out.textContent = range.value;
        this.actionsEl.append(h("label", { class: "cmd-slider" }, a.name, range, out));
      } else {
        this.actionsEl.append(h("button", { class: "tool", "data-testid": `action-${a.name}`, title: a.template,
          onclick: () => this.sendAction(a) }, a.name));
      }
    }
    this.actionsEl.hidden = !this.actionsEl.children.length;
  }

  hexChanged() {
    this.eolSel.disabled = this.hexBox.checked;
    this.input.placeholder = this.hexBox.checked ? "Hex bytes, e.g. 01 03 00 0a" : "Send to device…";
  }

  onKey(ev) {
    if (ev.key === "Enter") { ev.preventDefault(); this.sendTyped(); return; }
    if (ev.key !== "ArrowUp" && ev.key !== "ArrowDown") return;
    if (!this.history.length) return;
    ev.preventDefault();
    if (ev.key === "ArrowUp") this.histPos = this.histPos === null ? this.history.length - 1 : Math.max(0, this.histPos - 1);
    else if (this.histPos !== null) this.histPos = this.histPos + 1 < this.history.length ? this.histPos + 1 : null;
    const item = this.histPos === null ? null : this.history[this.histPos];
    this.input.value = item ? item.text : "";
    if (item) this.hexBox.checked = !!item.hex;
    this.hexChanged();
  }

  sendTyped() {
    const text = this.input.value;
    const hex = this.hexBox.checked;
    if (!text && (hex || this.eolSel.value === "none")) return;
    if (hex && !hexOk(text)) { this.setStatus("Not hex: two digits per byte, e.g. 01 03 0a", "bad"); return; }
    const msg = hex ? { stream: this.id, hex: text } : { stream: this.id, text, eol: this.eolSel.value };
    if (!this.dispatch(msg, hex ? `hex ${text}` : text)) return;
    const last = this.history[this.history.length - 1];
    if (!last || last.text !== text || !!last.hex !== hex) {
      this.history.push({ text, hex });
      if (this.history.length > HISTORY_MAX) this.history.splice(0, this.history.length - HISTORY_MAX);
      save(`history.${this.id}`, this.history);
    }
    this.histPos = null;
    this.input.value = "";
  }

  sendAction(action, value) {
    const text = renderTemplate(action.template, value);
    this.dispatch({ stream: this.id, text, eol: "none" }, value === undefined ? action.name : `${action.name} ${value}`);
  }

  dispatch(msg, label) {
    const ref = this.send({ type: "command", ...msg });
    if (ref === null) { this.setStatus("Not connected", "bad"); return false; }
    this.pending.set(ref, { label, at: performance.now() });
    this.setStatus(`Sending ${label}…`, "");
    return true;
  }

  /** A command_sent or error for one of our refs. True if it was ours. */
  reply(msg) {
    const p = this.pending.get(msg.ref);
    if (!p) return false;
    this.pending.delete(msg.ref);
    const ok = msg.type === "command_sent";
    this.replies.push({ ref: msg.ref, ok, bytes: msg.bytes ?? null, code: msg.code ?? null });
    if (this.replies.length > 50) this.replies.shift();
    this.setStatus(ok ? `Sent ${p.label} (${msg.bytes} B)` : `Not sent: ${msg.code}${msg.message ? ` – ${msg.message}` : ""}`, ok ? "ok" : "bad");
    return true;
  }

  setStatus(text, kind) {
    this.status.textContent = text;
    this.status.dataset.kind = kind;
  }

  /** A `console` message for this stream: append its lines (bounded). */
  console(msg) {
    const lines = Array.isArray(msg.lines) ? msg.lines.map(String) : [];
    if (msg.dropped > 0) lines.unshift(`… ${msg.dropped} line(s) not shown (rate limit)`);
    this.lines.push(...lines);
    if (this.lines.length > CONSOLE_MAX) this.lines.splice(0, this.lines.length - CONSOLE_MAX);
    const atBottom = this.consoleEl.scrollTop + this.consoleEl.clientHeight >= this.consoleEl.scrollHeight - 4;
    this.consoleEl.textContent = this.lines.join("\n");
    if (atBottom) this.consoleEl.scrollTop = this.consoleEl.scrollHeight;
  }

  snapshot() {
    return { visible: !this.el.hidden, history: this.history.map((x) => ({ ...x })), console: this.lines.slice(),
      replies: this.replies.slice(), eol: this.eolSel.value, hex: this.hexBox.checked, pending: this.pending.size,
      actions: [...this.actionsEl.querySelectorAll("[data-testid^=action-]")].map((e) => e.dataset.testid.slice(7)) };
  }
}
