// The dashboard's one connection: the daemon's WebSocket API, authenticated by the session cookie.
// Requests are matched to responses by id; one subscription follows every event. After a lost
// connection it reconnects (backing off up to 2 s) and resumes with `since` = the last seq seen,
// so no event is missed; a `resync` from the server replaces the services wholesale.

export class Api {
  constructor(handlers) {
    this.handlers = handlers; // { onEvent(ev), onResync(snapshot), onState(text), onOpen() }
    this.nextId = 1;
    this.pending = new Map();
    this.lastSeq = null;
    this.ws = null;
    this.backoff = 100;
    this.openWaiters = [];
  }

  start() {
    this.connect();
  }

  connect() {
    const ws = new WebSocket(`wss://${location.host}/v1/ws`);
    this.ws = ws;
    ws.onopen = () => {
      this.backoff = 100;
      this.handlers.onState('live');
      for (const w of this.openWaiters.splice(0)) w();
      this.handlers.onOpen().catch((e) => this.handlers.onState('error: ' + e.message));
    };
    ws.onmessage = (m) => this.message(JSON.parse(m.data));
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      for (const [, p] of this.pending) p.reject(new Error('connection lost'));
      this.pending.clear();
      this.handlers.onState('reconnecting…');
      setTimeout(() => this.connect(), this.backoff);
      this.backoff = Math.min(this.backoff * 2, 2000);
    };
  }

  message(msg) {
    if (msg.subscription !== undefined && msg.resync) {
      this.lastSeq = msg.resync.seq;
      this.handlers.onResync(msg.resync);
    } else if (msg.subscription !== undefined && msg.seq !== undefined) {
      if (this.lastSeq === null || msg.seq > this.lastSeq) {
        this.lastSeq = msg.seq;
        this.handlers.onEvent(msg);
      }
    } else if (msg.id !== undefined && msg.progress === undefined) {
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.error) p.reject(Object.assign(new Error(msg.error.message), { code: msg.error.code }));
      else p.resolve(msg.result);
    }
  }

  async opened() {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) return;
    await new Promise((resolve) => this.openWaiters.push(resolve));
  }

  async request(method, params = {}) {
    await this.opened();
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ id, method, params }));
    });
  }

  // Every event after `since` (or from now), then live ones.
  async subscribe(since) {
    const params = since === null ? {} : { since };
    const r = await this.request('subscribe', params);
    if (this.lastSeq === null) this.lastSeq = r.last_seq;
    return r;
  }
}
