// WebSocket connection with liveness watchdog and capped exponential backoff.
// States: "connecting" (first attempt), "connected" (hello received),
// "reconnecting" (retrying, attempt n), "disconnected" (retrying slowly after
// many failed attempts; "retry now" skips the wait).

export const BACKOFF_BASE_MS = 250;
export const BACKOFF_CAP_MS = 5000;
export const DISCONNECTED_AFTER = 6;       // attempts before the indicator says "disconnected"
export const DEAD_FACTOR = 2.5;            // silence > 2.5 × heartbeat_s means the server is gone
export const HELLO_TIMEOUT_MS = 5000;

export class Connection {
  constructor(url, { onHello, onText, onBinary, onState }) {
    this.url = url;
    this.h = { onHello, onText, onBinary, onState };
    this.ws = null;
    this.state = "connecting";
    this.attempt = 0;            // failed attempts since the last good connection
    this.heartbeatS = null;
    this.lastRx = 0;             // performance.now() of the last frame received
    this.openedAt = 0;
    this.retryTimer = null;
    this.nextRetryAt = 0;
    this.connects = 0;           // successful hellos, ever
    this.watchdog = setInterval(() => this._check(), 250);
  }

  start() { this._open(); }

  _set(state) {
    this.state = state;
    this.h.onState?.(state, this);
  }

  _open() {
    this.retryTimer = null;
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (e) {
      this._fail();
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.openedAt = performance.now();
    this.lastRx = this.openedAt;
    this.gotHello = false;
    ws.onmessage = (ev) => {
      if (ws !== this.ws) return;
      this.lastRx = performance.now();
      if (typeof ev.data === "string") {
        let msg;
        try { msg = JSON.parse(ev.data); } catch { return; }
        if (!msg || typeof msg !== "object") return;
        if (msg.type === "hello" && !this.gotHello) {
          this.gotHello = true;
          this.heartbeatS = typeof msg.heartbeat_s === "number" && msg.heartbeat_s > 0 ? msg.heartbeat_s : null;
          this.attempt = 0;
          this.connects++;
          this._set("connected");
          this.h.onHello?.(msg, this);
        } else {
          this.h.onText?.(msg, this);
        }
      } else {
        this.h.onBinary?.(ev.data, this);
      }
    };
    ws.onclose = () => { if (ws === this.ws) this._fail(); };
    ws.onerror = () => { /* onclose follows */ };
  }

  /** Drop the current socket (without waiting for a close handshake) and schedule a retry. */
  _fail() {
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onmessage = ws.onclose = ws.onerror = null;
      try { ws.close(); } catch { /* already closed */ }
    }
    this.attempt++;
    const delay = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** (this.attempt - 1)) * (0.8 + 0.4 * Math.random());
    this.nextRetryAt = performance.now() + delay;
    this._set(this.attempt > DISCONNECTED_AFTER ? "disconnected" : "reconnecting");
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this._open(), delay);
  }

  retryNow() {
    if (this.ws) return;
    clearTimeout(this.retryTimer);
    this._open();
  }

  _check() {
    if (!this.ws) return;
    const now = performance.now();
    if (!this.gotHello) {
      if (now - this.openedAt > HELLO_TIMEOUT_MS) this._fail();
      return;
    }
    const hb = this.heartbeatS ?? 5;
    if (now - this.lastRx > DEAD_FACTOR * hb * 1000) this._fail();
  }

  send(obj) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(obj));
      return true;
    }
    return false;
  }
}
