/**
 * pgobserve's JavaScript client: one WebSocket to a pgobserve (or DCRF) consumer, with
 * requests as promises and subscriptions as live objects that stay equal to the database
 * across reconnects.
 *
 * Why it exists: a socket on a phone drops all the time, and subscriptions live with the
 * socket on the server. Re-subscribing blindly after a reconnect (as dcrf-client does)
 * misses every change made while away; this client re-subscribes and REPLACES its state
 * with the fresh snapshot the server answers with, so it converges without a page reload.
 *
 * An ES module with no dependencies and no build step; served by Django's staticfiles:
 *
 *     import { connect } from "/static/pgobserve/client.js";
 *     const client = connect("/ws/tasks/");
 *     const open = client.subscribeQuery({ done: false }, { orderBy: ["-id"], onChange: render });
 *
 * The wire protocol is DCRF's: README "Protocol" and "Query subscriptions".
 * @module pgobserve/client
 */

/** Close codes after which reconnecting cannot help: logged out (4401), refused (4403). */
const FINAL_CLOSE_CODES = new Set([4401, 4403]);
/** Server-initiated messages for a subscription; anything else with its request_id is a reply. */
const PUSH_ACTIONS = new Set(["create", "update", "delete"]);
const DEFAULT_BACKOFF = Object.freeze({ initial: 250, max: 5_000, resetAfter: 5_000 });

/**
 * A failed request: an error envelope from the server (`status` is its response_status,
 * `errors` its list), or no reply at all (`status` 0: timeout, connection lost, client
 * closed), or the server ending the session (`status` is the close code, 4401 or 4403).
 */
export class PgObserveError extends Error {
  constructor(message, { status = 0, errors = [], action = null, requestId = null } = {}) {
    super(message);
    this.name = "PgObserveError";
    this.status = status;
    this.errors = errors;
    this.action = action;
    this.requestId = requestId;
  }

  /** The error of a reply whose status is not 2xx. */
  static fromEnvelope(envelope) {
    const errors = Array.isArray(envelope.errors) ? envelope.errors : [];
    const text = errors.map((e) => (typeof e === "string" ? e : JSON.stringify(e))).join("; ");
    const action = envelope.action ?? null;
    const status = envelope.response_status;
    const message = `${action ?? "request"} failed with ${status}: ${text || "no details"}`;
    return new PgObserveError(message, {
      status,
      errors,
      action,
      requestId: envelope.request_id ?? null,
    });
  }
}

/**
 * The wait before reconnect attempt `attempt` (0 for the first): "full jitter", a uniform
 * draw in [0, min(max, initial * 2^attempt)). Spreading reconnects out this way keeps a
 * restarted server from being hit by every client in the same millisecond.
 * @param {number} attempt
 * @param {{initial: number, max: number}} backoff
 * @param {() => number} [random] a source of [0, 1) numbers
 */
export function backoffDelay(attempt, { initial, max }, random = Math.random) {
  return random() * Math.min(max, initial * 2 ** attempt);
}

/** @returns {boolean} whether a reply or push reports success (DCRF: any 2xx). */
function succeeded(envelope) {
  const status = envelope.response_status;
  return typeof status === "number" && status >= 200 && status < 300;
}

/** The lookup keys of a row: `{pk}` for a pk, the object itself for `{slug: "demo"}`. */
function lookupOf(pk) {
  return pk !== null && typeof pk === "object" ? { ...pk } : { pk };
}

/** A Map key for a pk: 5 and "5" are the same row (a delete push may carry either). */
function keyText(pk) {
  return pk !== null && typeof pk === "object" ? JSON.stringify(pk) : String(pk);
}

function sameJson(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** A relative URL resolved against the page, with http(s) turned into ws(s). */
function resolveUrl(url, location) {
  const text = String(url);
  if (/^wss?:\/\//i.test(text)) return text;
  if (!location?.href) {
    throw new TypeError(`"${text}" is relative and there is no page location: pass ws://...`);
  }
  const resolved = new URL(text, location.href);
  resolved.protocol = resolved.protocol === "https:" ? "wss:" : "ws:";
  return resolved.href;
}

/**
 * The order of Django's `ordering` (["-id", "title"]), kept on the client because pushes
 * say what changed, not where. NULLs sort last ascending, first descending (PostgreSQL's
 * default); strings compare by code point. Pass a function for any other order.
 */
function comparatorFor(orderBy, keyOf) {
  if (typeof orderBy === "function") return orderBy;
  if (!orderBy || orderBy.length === 0) return null;
  const fields = orderBy.map((field) => {
    const descending = field.startsWith("-");
    const name = descending ? field.slice(1) : field;
    const path = name.split(/__|\./);
    const read = (row) =>
      name === "pk" && !(row && "pk" in row) ? keyOf(row) : path.reduce((v, k) => v?.[k], row);
    return { read, sign: descending ? -1 : 1 };
  });
  return (a, b) => {
    for (const { read, sign } of fields) {
      const order = compareValues(read(a), read(b));
      if (order !== 0) return order * sign;
    }
    return 0;
  };
}

function compareValues(x, y) {
  const xNull = x === null || x === undefined;
  const yNull = y === null || y === undefined;
  if (xNull || yNull) return xNull === yNull ? 0 : xNull ? 1 : -1;
  if (typeof x === "number" && typeof y === "number") return x - y;
  if (typeof x === "boolean" && typeof y === "boolean") return Number(x) - Number(y);
  return x < y ? -1 : x > y ? 1 : 0;
}

/**
 * Requests, CRUD helpers and subscriptions on one consumer: the client itself, or a
 * `channelsmultiplexer` stream of it (`client.stream(name)`), whose frames are wrapped as
 * `{"stream": name, "payload": {...}}` both ways.
 */
export class Stream {
  constructor(client, name) {
    /** @type {Client} */
    this.client = client;
    /** The multiplexer stream's name; null for the client itself. */
    this.name = name;
    /** @type {Map<string, LiveRow|LiveCollection>} by request_id */
    this._subscriptions = new Map();
  }

  /**
   * Sends `{action, request_id, ...payload}` and resolves with the `data` of the 2xx reply;
   * rejects with a PgObserveError otherwise. While disconnected the request waits in a
   * queue; one in flight when the socket drops rejects (it may have been applied, so it is
   * never sent twice).
   */
  request(action, payload = {}) {
    return this.client._request(this, action, payload, this.client._nextId());
  }

  // DCRF's CRUD actions; a pk may be a lookup object ({slug: "demo"}).
  create(data) { return this.request("create", { data }); }
  retrieve(pk) { return this.request("retrieve", lookupOf(pk)); }
  list(payload = {}) { return this.request("list", payload); }
  update(pk, data) { return this.request("update", { ...lookupOf(pk), data }); }
  patch(pk, data) { return this.request("patch", { ...lookupOf(pk), data }); }
  delete(pk) { return this.request("delete", lookupOf(pk)); }

  /** A live row: `value` follows the row (null once deleted or no longer visible). */
  subscribeInstance(pk, options = {}) {
    return this._start(new LiveRow(this, pk, options));
  }

  /** A live list of the rows matching `filters`, kept in `orderBy` order. */
  subscribeQuery(filters = {}, options = {}) {
    return this._start(new LiveCollection(this, filters, options));
  }

  _start(subscription) {
    this._subscriptions.set(subscription.requestId, subscription);
    this.client._subscribe(subscription);
    return subscription;
  }
}

/**
 * The connection: reconnects with backoff, matches replies to requests, queues while
 * disconnected and re-subscribes on every open. Made by {@link connect}.
 */
export class Client extends Stream {
  constructor(url, options = {}) {
    super(null, null);
    this.client = this;
    this.url = resolveUrl(url, options.location ?? globalThis.location);
    this._WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this._WebSocket !== "function") {
      throw new TypeError("no WebSocket here: pass one as connect(url, { WebSocket })");
    }
    this._backoff = { ...DEFAULT_BACKOFF, ...options.backoff };
    this._requestTimeout = options.requestTimeout ?? 30_000;
    this._random = options.random ?? Math.random;
    this._now = options.now ?? Date.now;
    this._timers = options.timers ?? {
      setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
      clearTimeout: (id) => globalThis.clearTimeout(id),
    };
    /** Per-client prefix: request_ids stay unique across clients sharing a server log. */
    this._idPrefix = Math.floor(Math.random() * 36 ** 6).toString(36);
    this._idCounter = 0;
    /** @type {Map<string, object>} requests awaiting a reply, by stream, action and id */
    this._pending = new Map();
    /** Requests made while disconnected, sent in order on open. */
    this._queue = [];
    this._streams = new Map([[null, this]]);
    this._listeners = new Map();
    this._attempt = 0;
    this._openedAt = null;
    this._socket = null;
    this._reconnectTimer = null;
    /** @type {"connecting"|"open"|"reconnecting"|"closed"} */
    this.state = "connecting";
    // Coming back online is the moment to retry, not when the backoff happens to end.
    this._onOnline = () => {
      if (this._reconnectTimer === null) return;
      this._timers.clearTimeout(this._reconnectTimer);
      this._open();
    };
    globalThis.addEventListener?.("online", this._onOnline);
    this._open();
  }

  /** Listens to "state" (fn(state)) or "error"; returns a function that stops listening. */
  on(event, fn) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(fn);
    return () => this._listeners.get(event).delete(fn);
  }

  /** The `channelsmultiplexer` stream `name` of this socket (one object per name). */
  stream(name) {
    if (!this._streams.has(name)) this._streams.set(name, new Stream(this, name));
    return this._streams.get(name);
  }

  /** Closes for good: no reconnect; waiting requests and subscriptions reject. */
  close() {
    if (this.state !== "closed") this._shutdown(new PgObserveError("the client was closed"));
  }

  _nextId() {
    return `${this._idPrefix}-${++this._idCounter}`;
  }

  _emit(event, value) {
    const listeners = this._listeners.get(event);
    if (event === "error" && !listeners?.size) {
      // An error nobody listens to is still seen; a socket's error event the browser logs.
      if (value instanceof Error) console.error("pgobserve client:", value);
      return;
    }
    for (const fn of listeners ?? []) this._call(fn, value);
  }

  /** Calls application code; its exceptions become "error" events, not a broken socket. */
  _call(fn, ...args) {
    try {
      fn(...args);
    } catch (error) {
      if (fn && this._listeners.get("error")?.has(fn)) console.error(error);
      else this._emit("error", error);
    }
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit("state", state);
  }

  _open() {
    this._reconnectTimer = null;
    let socket;
    try {
      socket = new this._WebSocket(this.url);
    } catch (error) {
      this._emit("error", error);
      this._scheduleReconnect();
      return;
    }
    this._socket = socket;
    // Events of a socket already replaced (closed by us, late callbacks) are ignored.
    socket.onopen = () => socket === this._socket && this._opened();
    socket.onmessage = (event) => socket === this._socket && this._message(event.data);
    socket.onerror = (event) => socket === this._socket && this._emit("error", event);
    socket.onclose = (event) => socket === this._socket && this._closed(event);
  }

  _opened() {
    this._openedAt = this._now();
    this.state = "open";
    // Subscriptions first: the server forgot them with the old socket. All is sent before
    // the "state" listeners run, so what they subscribe or request is sent once, after.
    for (const stream of this._streams.values()) {
      for (const subscription of stream._subscriptions.values()) this._sendSubscribe(subscription);
    }
    for (const entry of this._queue.splice(0)) this._transmit(entry);
    this._emit("state", "open");
  }

  _closed(event) {
    this._socket = null;
    if (this._openedAt !== null && this._now() - this._openedAt >= this._backoff.resetAfter) {
      this._attempt = 0; // it was a working connection, not a failing server: retry soon
    }
    this._openedAt = null;
    for (const entry of [...this._pending.values()]) {
      if (!entry.sent) continue;
      this._forget(entry);
      if (!entry.resubscribe) {
        const message = `the connection was lost before the reply to ${entry.action}`;
        entry.reject(
          new PgObserveError(`${message}; it may or may not have been applied`, {
            action: entry.action,
            requestId: entry.requestId,
          }),
        );
      }
    }
    if (this.state === "closed") return;
    if (FINAL_CLOSE_CODES.has(event?.code)) {
      const why = event.code === 4401 ? "the session ended: log in again" : "the server refused";
      const reason = event.reason ? ` (${event.reason})` : "";
      this._shutdown(
        new PgObserveError(`socket closed with ${event.code}: ${why}${reason}`, {
          status: event.code,
        }),
        true,
      );
      return;
    }
    this._scheduleReconnect();
  }

  _scheduleReconnect() {
    this._setState("reconnecting");
    const delay = backoffDelay(this._attempt, this._backoff, this._random);
    this._attempt = Math.min(this._attempt + 1, 30); // 2^30 * initial is past any max
    this._reconnectTimer = this._timers.setTimeout(() => this._open(), delay);
  }

  _shutdown(error, report = false) {
    this._setState("closed");
    globalThis.removeEventListener?.("online", this._onOnline);
    if (this._reconnectTimer !== null) this._timers.clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    const socket = this._socket;
    this._socket = null;
    socket?.close(1000);
    this._queue = [];
    for (const entry of [...this._pending.values()]) {
      this._forget(entry);
      entry.reject(error);
    }
    for (const stream of this._streams.values()) {
      for (const subscription of [...stream._subscriptions.values()]) subscription._end(error);
    }
    if (report) this._emit("error", error);
  }

  _message(text) {
    if (typeof text !== "string") return; // the protocol is JSON text frames only
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      this._emit("error", new PgObserveError(`not JSON: ${text.slice(0, 100)}`));
      return;
    }
    if (message === null || typeof message !== "object") return;
    let stream = this;
    let envelope = message;
    const { payload } = message;
    if (typeof message.stream === "string" && payload !== null && typeof payload === "object") {
      stream = this._streams.get(message.stream);
      envelope = payload;
      if (!stream) return; // a stream this client never opened
    }
    const requestId = envelope.request_id;
    if (requestId === null || requestId === undefined) {
      if (!succeeded(envelope)) this._emit("error", PgObserveError.fromEnvelope(envelope));
      return;
    }
    // A reply is the first message with the request's id AND action: a subscription's
    // pushes share its id, and may come before the reply to its unsubscribe.
    const entry = this._pending.get(pendingKey(stream, envelope.action, requestId));
    if (entry) {
      this._forget(entry);
      if (succeeded(envelope)) entry.resolve(envelope.data);
      else entry.reject(PgObserveError.fromEnvelope(envelope));
      return;
    }
    const subscription = stream._subscriptions.get(requestId);
    if (subscription && PUSH_ACTIONS.has(envelope.action)) subscription._push(envelope);
  }

  /** Registers a request awaiting its reply; sends it now or queues it. */
  _request(stream, action, payload, requestId, { queue = true } = {}) {
    if (this.state === "closed") {
      return Promise.reject(new PgObserveError("the client is closed", { action, requestId }));
    }
    if (!queue && this.state !== "open") return Promise.resolve(null);
    return new Promise((resolve, reject) => {
      const frame = { ...payload, action, request_id: requestId };
      const entry = this._expect(stream, action, requestId, resolve, reject, frame);
      if (this.state === "open") this._transmit(entry);
      else this._queue.push(entry);
    });
  }

  _expect(stream, action, requestId, resolve, reject, frame) {
    const entry = { key: pendingKey(stream, action, requestId), stream, action, requestId };
    Object.assign(entry, { resolve, reject, frame, sent: false, timer: null, resubscribe: false });
    this._pending.set(entry.key, entry);
    return entry;
  }

  /** Sends a registered request; its timeout runs from here (a queued one waits freely). */
  _transmit(entry) {
    entry.sent = true;
    entry.timer = this._timers.setTimeout(() => {
      this._forget(entry);
      entry.reject(
        new PgObserveError(`no reply to ${entry.action} within ${this._requestTimeout} ms`, {
          action: entry.action,
          requestId: entry.requestId,
        }),
      );
    }, this._requestTimeout);
    const { name } = entry.stream;
    const frame = name === null ? entry.frame : { stream: name, payload: entry.frame };
    this._socket.send(JSON.stringify(frame));
  }

  _forget(entry) {
    if (entry.timer !== null) this._timers.clearTimeout(entry.timer);
    entry.timer = null;
    if (this._pending.get(entry.key) === entry) this._pending.delete(entry.key);
    const queued = this._queue.indexOf(entry);
    if (queued !== -1) this._queue.splice(queued, 1);
  }

  /** A new subscription: sent now if open, else on the next open (never queued twice). */
  _subscribe(subscription) {
    if (this.state === "closed") subscription._end(new PgObserveError("the client is closed"));
    else if (this.state === "open") this._sendSubscribe(subscription);
  }

  _sendSubscribe(subscription) {
    const { stream, requestId } = subscription;
    const frame = subscription._subscribeFrame();
    const entry = this._expect(
      stream,
      frame.action,
      requestId,
      (data) => subscription._snapshot(data),
      (error) => subscription._failed(error),
      frame,
    );
    entry.resubscribe = true; // a lost reply is not an error: the next open sends it again
    this._transmit(entry);
  }
}

function pendingKey(stream, action, requestId) {
  return JSON.stringify([stream.name, action, requestId]);
}

/**
 * What LiveRow and LiveCollection share: a request_id kept across reconnects, `ready`,
 * and the rule that every snapshot replaces the state (pushes before it are ignored:
 * the snapshot already holds what they would say).
 */
class Subscription {
  constructor(stream, options) {
    this.stream = stream;
    this.requestId = stream.client._nextId();
    this.active = true;
    /** True once the first snapshot arrived. */
    this.isReady = false;
    this._onChange = options.onChange;
    /** Resolves with this object after the first 201; rejects if it fails. */
    this.ready = new Promise((resolve, reject) => {
      this._resolveReady = resolve;
      this._rejectReady = reject;
    });
    this.ready.catch(() => {}); // not awaiting `ready` must not be an unhandled rejection
  }

  /**
   * Stops the pushes at once; tells the server if connected (an offline socket's
   * subscriptions died with it). Resolves when done, whatever the server answers.
   */
  unsubscribe() {
    if (!this.active) return Promise.resolve();
    this._end(new PgObserveError("unsubscribed before the first snapshot"));
    const { client } = this.stream;
    const [action, payload] = this._unsubscribeRequest();
    return client
      ._request(this.stream, action, payload, this.requestId, { queue: false })
      .then(() => undefined, () => undefined);
  }

  _end(error) {
    this.active = false;
    this.stream._subscriptions.delete(this.requestId);
    if (!this.isReady) this._rejectReady(error);
  }

  _snapshot(data) {
    if (!this.active) return;
    this._replace(data);
    if (!this.isReady) {
      this.isReady = true;
      this._resolveReady(this);
    }
  }

  _failed(error) {
    if (!this.active) return;
    if (!this.isReady) {
      this._end(error); // a subscription the server refuses the first time is dead
      this.stream.client._emit("error", error);
    } else {
      this._resyncFailed(error);
    }
  }

  _resyncFailed(error) {
    this.stream.client._emit("error", error); // kept: the next reconnect tries again
  }
}

/** A live row (`subscribe_instance` with `"snapshot": true`). */
export class LiveRow extends Subscription {
  constructor(stream, pk, options = {}) {
    super(stream, options);
    this.pk = pk;
    /** The serialized row; null when deleted or not visible to this socket. */
    this.value = null;
  }

  _subscribeFrame() {
    const frame = { ...lookupOf(this.pk), action: "subscribe_instance" };
    return Object.assign(frame, { request_id: this.requestId, snapshot: true });
  }

  _unsubscribeRequest() {
    return ["unsubscribe_instance", lookupOf(this.pk)];
  }

  _changed(action) {
    if (this._onChange) this.stream.client._call(this._onChange, this.value, action);
  }

  /** A snapshot: what changed while away (if anything), then "reset". */
  _replace(data) {
    const before = this.value;
    this.value = data ?? null;
    if (this.isReady && !sameJson(before, this.value)) {
      this._changed(before === null ? "create" : this.value === null ? "delete" : "update");
    }
    this._changed("reset");
  }

  _push(envelope) {
    if (!this.isReady) return;
    // DCRF answers a row leaving the queryset with an "update" of status 404.
    const gone = envelope.action === "delete" || !succeeded(envelope);
    this.value = gone ? null : envelope.data;
    this._changed(gone ? "delete" : envelope.action);
  }

  /** A 404 on re-subscribing: the row was deleted (or hidden) while away. */
  _resyncFailed(error) {
    if (error.status !== 404) return super._resyncFailed(error);
    this._replace(null);
  }
}

/** A live, ordered list of rows (`subscribe_query`). */
export class LiveCollection extends Subscription {
  constructor(stream, filters, options = {}) {
    super(stream, options);
    this.filters = filters;
    /** The rows in order. Replaced on every change, never mutated: compare by identity. */
    this.items = [];
    const key = options.key;
    /** The pk of a row: `key` (a field name or function), else `row.pk`, else `row.id`. */
    this.keyOf =
      typeof key === "function" ? key : key ? (row) => row[key] : (row) => row.pk ?? row.id;
    this._compare = comparatorFor(options.orderBy, this.keyOf);
  }

  /** The held row with this pk, or undefined. */
  get(pk) {
    return this.items[this._indexOf(pk)];
  }

  _subscribeFrame() {
    return { action: "subscribe_query", filters: this.filters, request_id: this.requestId };
  }

  _unsubscribeRequest() {
    return ["unsubscribe_query", {}];
  }

  _changed(type, pk, value, previous) {
    if (this._onChange) {
      this.stream.client._call(this._onChange, this.items, { type, pk, value, previous });
    }
  }

  _indexOf(pk) {
    const wanted = keyText(pk);
    return this.items.findIndex((row) => keyText(this.keyOf(row)) === wanted);
  }

  /** Where a row goes: after its equals, as a create is appended when there is no order. */
  _insertionPoint(items, row) {
    if (!this._compare) return items.length;
    let low = 0;
    let high = items.length;
    while (low < high) {
      const middle = (low + high) >> 1;
      if (this._compare(items[middle], row) <= 0) low = middle + 1;
      else high = middle;
    }
    return low;
  }

  /**
   * A snapshot. After a reconnect the rows are diffed by pk against what was held, and
   * each difference is reported (with `items` already the fresh list) before "reset".
   */
  _replace(data) {
    const rows = Array.isArray(data) ? [...data] : [];
    if (this._compare) rows.sort(this._compare); // stable: the server's order among equals
    const held = new Map(this.items.map((row) => [keyText(this.keyOf(row)), row]));
    const fresh = new Map(rows.map((row) => [keyText(this.keyOf(row)), row]));
    this.items = rows;
    if (this.isReady) {
      for (const [key, row] of held) {
        if (!fresh.has(key)) this._changed("delete", this.keyOf(row), null, row);
      }
      for (const [key, row] of fresh) {
        const before = held.get(key);
        if (before === undefined) this._changed("create", this.keyOf(row), row, null);
        else if (!sameJson(before, row)) this._changed("update", this.keyOf(row), row, before);
      }
    }
    this._changed("reset", null, null, null);
  }

  _push(envelope) {
    if (!this.isReady) return;
    if (!succeeded(envelope)) {
      this.stream.client._emit("error", PgObserveError.fromEnvelope(envelope));
      return;
    }
    if (envelope.action === "delete") {
      const pk = envelope.data?.pk;
      const index = this._indexOf(pk);
      if (index === -1) return;
      const before = this.items[index];
      this.items = this.items.filter((_, i) => i !== index);
      this._changed("delete", pk, null, before);
      return;
    }
    // create/update as what they do here: a create of a held row updates it, and so on.
    const row = envelope.data;
    const pk = this.keyOf(row);
    const index = this._indexOf(pk);
    const before = index === -1 ? null : this.items[index];
    const items = index === -1 ? [...this.items] : this.items.filter((_, i) => i !== index);
    const at = !this._compare && index !== -1 ? index : this._insertionPoint(items, row);
    items.splice(at, 0, row);
    this.items = items;
    this._changed(before === null ? "create" : "update", pk, row, before);
  }
}

/**
 * Opens a client on `url` (relative URLs resolve against the page, http→ws, https→wss).
 * @param {string|URL} url
 * @param {object} [options] see client.d.ts
 * @returns {Client}
 */
export function connect(url, options = {}) {
  return new Client(url, options);
}
