// Unit tests of pgobserve/static/pgobserve/client.js against a fake WebSocket and a fake
// clock: no server, no real waiting. Run with `node --test tests/js/`.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  backoffDelay,
  connect,
  LiveCollection,
  LiveRow,
  PgObserveError,
} from "../../pgobserve/static/pgobserve/client.js";

/** Timers that run only when the test advances the clock. */
function fakeClock() {
  let now = 0;
  let nextId = 1;
  const timers = new Map();
  return {
    now: () => now,
    setTimeout(fn, ms) {
      const id = nextId++;
      timers.set(id, { at: now + ms, ms, fn });
      return id;
    },
    clearTimeout(id) {
      timers.delete(id);
    },
    /** The delays of the timers waiting now. */
    waiting: () => [...timers.values()].map((t) => t.ms),
    advance(ms) {
      const until = now + ms;
      for (;;) {
        const due = [...timers.entries()]
          .filter(([, t]) => t.at <= until)
          .sort(([, a], [, b]) => a.at - b.at)[0];
        if (!due) break;
        timers.delete(due[0]);
        now = due[1].at;
        due[1].fn();
      }
      now = until;
    },
  };
}

/** A client on a fake socket class; `socket()` is the newest socket it made. */
function setup(options = {}) {
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.sent = [];
      this.closedWith = null;
      sockets.push(this);
    }
    send(text) {
      this.sent.push(JSON.parse(text));
    }
    close(code) {
      this.closedWith = code;
    }
    // What the server side does:
    open() {
      this.onopen?.({});
    }
    receive(message) {
      this.onmessage?.({ data: JSON.stringify(message) });
    }
    drop(code = 1006, reason = "") {
      this.onclose?.({ code, reason });
    }
  }
  const clock = fakeClock();
  const client = connect("ws://server/ws/tasks/", {
    WebSocket: FakeWebSocket,
    timers: clock,
    now: clock.now,
    random: () => 0.5,
    ...options,
  });
  const errors = [];
  const states = [];
  client.on("error", (error) => errors.push(error));
  client.on("state", (state) => states.push(state));
  return { client, sockets, clock, errors, states, socket: () => sockets.at(-1) };
}

/** The server's reply to `frame` (DCRF's five keys). */
function reply(frame, data, status = 200, errors = []) {
  return {
    errors,
    data,
    action: frame.action,
    response_status: status,
    request_id: frame.request_id,
  };
}

function push(frame, action, data, status = 200) {
  return { errors: [], data, action, response_status: status, request_id: frame.request_id };
}

/** A promise's outcome so far, readable without awaiting it. */
function track(promise) {
  const outcome = { state: "pending" };
  promise.then(
    (value) => Object.assign(outcome, { state: "fulfilled", value }),
    (error) => Object.assign(outcome, { state: "rejected", error }),
  );
  return outcome;
}

const settle = () => new Promise((resolve) => setImmediate(resolve));

describe("requests", () => {
  test("a reply is the first message with the request's id and action", async () => {
    const { client, socket } = setup();
    socket().open();
    const first = track(client.retrieve(1));
    const second = track(client.request("list", { page_size: 2 }));
    const [retrieveFrame, listFrame] = socket().sent;
    assert.equal(retrieveFrame.action, "retrieve");
    assert.equal(retrieveFrame.pk, 1);
    assert.equal(listFrame.page_size, 2);
    assert.notEqual(retrieveFrame.request_id, listFrame.request_id);
    assert.match(retrieveFrame.request_id, /^[0-9a-z]+-\d+$/);

    // A push with the same request_id before the reply is not the reply.
    socket().receive(push(retrieveFrame, "update", { id: 1, title: "pushed" }));
    await settle();
    assert.equal(first.state, "pending");
    // Replies may come in any order.
    socket().receive(reply(listFrame, [{ id: 1 }, { id: 2 }]));
    socket().receive(reply(retrieveFrame, { id: 1, title: "a" }));
    // A later message with the same id (a push) does not settle anything again.
    socket().receive(push(retrieveFrame, "retrieve", { id: 1, title: "late" }));
    await settle();
    assert.deepEqual(first.value, { id: 1, title: "a" });
    assert.deepEqual(second.value, [{ id: 1 }, { id: 2 }]);
  });

  test("an error envelope rejects with its status, errors and action", async () => {
    const { client, socket, errors } = setup();
    socket().open();
    const created = track(client.create({}));
    const frame = socket().sent[0];
    assert.deepEqual(frame.data, {});
    const fieldErrors = [{ title: ["This field is required."] }];
    socket().receive(reply(frame, null, 400, fieldErrors));
    await settle();
    assert.equal(created.state, "rejected");
    assert.ok(created.error instanceof PgObserveError);
    assert.equal(created.error.status, 400);
    assert.deepEqual(created.error.errors, fieldErrors);
    assert.equal(created.error.action, "create");
    assert.equal(created.error.requestId, frame.request_id);
    assert.deepEqual(errors, []); // a request's error goes to its promise only

    // An error that names no request (request_id null) is an "error" event.
    socket().receive({
      errors: ["Invalid JSON."],
      data: null,
      action: null,
      response_status: 400,
      request_id: null,
    });
    assert.equal(errors.length, 1);
    assert.equal(errors[0].status, 400);
    assert.deepEqual(errors[0].errors, ["Invalid JSON."]);
  });

  test("CRUD helpers send DCRF's keys; an object is a lookup", () => {
    const { client, socket } = setup();
    socket().open();
    client.update(3, { title: "u" });
    client.patch({ slug: "demo" }, { name: "p" });
    client.delete(4);
    client.list();
    const strip = ({ request_id, ...rest }) => rest;
    assert.deepEqual(socket().sent.map(strip), [
      { pk: 3, data: { title: "u" }, action: "update" },
      { slug: "demo", data: { name: "p" }, action: "patch" },
      { pk: 4, action: "delete" },
      { action: "list" },
    ]);
  });

  test("no reply within requestTimeout rejects with status 0", async () => {
    const { client, socket, clock } = setup({ requestTimeout: 1000 });
    socket().open();
    const retrieved = track(client.retrieve(1));
    clock.advance(999);
    await settle();
    assert.equal(retrieved.state, "pending");
    clock.advance(1);
    await settle();
    assert.equal(retrieved.state, "rejected");
    assert.equal(retrieved.error.status, 0);
    assert.match(retrieved.error.message, /no reply to retrieve within 1000 ms/);
  });
});

describe("disconnected", () => {
  test("requests wait in a queue and are sent in order on open", async () => {
    const { client, socket, clock } = setup({ requestTimeout: 1000 });
    const created = track(client.create({ title: "offline" }));
    const patched = track(client.patch(1, { done: true }));
    assert.deepEqual(socket().sent, []);
    socket().drop(); // the handshake failed: nothing was sent, nothing is lost
    clock.advance(60_000); // a queued request waits; its timeout starts when sent
    await settle();
    assert.equal(created.state, "pending");
    socket().open();
    const [createFrame, patchFrame] = socket().sent;
    assert.equal(createFrame.action, "create");
    assert.equal(patchFrame.action, "patch");
    socket().receive(reply(createFrame, { id: 9 }, 201));
    socket().receive(reply(patchFrame, { id: 1, done: true }));
    await settle();
    assert.deepEqual(created.value, { id: 9 });
    assert.deepEqual(patched.value, { id: 1, done: true });
  });

  test("a request in flight when the socket drops rejects and is never resent", async () => {
    const { client, sockets, socket, clock } = setup();
    socket().open();
    const inFlight = track(client.create({ title: "maybe" }));
    socket().drop();
    await settle();
    assert.equal(inFlight.state, "rejected");
    assert.equal(inFlight.error.status, 0);
    assert.match(inFlight.error.message, /may or may not have been applied/);
    const later = track(client.retrieve(2)); // made while reconnecting: queued
    clock.advance(10_000);
    assert.equal(sockets.length, 2);
    socket().open();
    assert.deepEqual(
      socket().sent.map((f) => f.action),
      ["retrieve"],
    );
    socket().receive(reply(socket().sent[0], { id: 2 }));
    await settle();
    assert.deepEqual(later.value, { id: 2 });
  });
});

describe("reconnecting", () => {
  test("backoffDelay: full jitter below an exponentially growing cap", () => {
    const cap = (attempt) => backoffDelay(attempt, { initial: 250, max: 10_000 }, () => 1);
    assert.deepEqual(
      [0, 1, 2, 3, 4, 5, 6, 40].map(cap),
      [250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000],
    );
    assert.equal(backoffDelay(3, { initial: 250, max: 10_000 }, () => 0), 0);
    for (let attempt = 0; attempt < 8; attempt++) {
      for (let i = 0; i < 200; i++) {
        const delay = backoffDelay(attempt, { initial: 250, max: 10_000 });
        assert.ok(delay >= 0 && delay < Math.min(10_000, 250 * 2 ** attempt), `${delay}`);
      }
    }
  });

  test("each failure waits longer; a connection open for resetAfter starts over", () => {
    const draws = [0.9, 0.1, 0.5, 0.99, 0.3, 0.7];
    const { client, sockets, socket, clock, states } = setup({
      random: () => draws.shift(),
      backoff: { initial: 100, max: 1000 },
    });
    const delays = [];
    for (let i = 0; i < 5; i++) {
      socket().drop(); // the handshake failed
      delays.push(clock.waiting()[0]);
      clock.advance(delays.at(-1));
    }
    assert.deepEqual(delays, [90, 20, 200, 792, 300]); // draw * min(1000, 100 * 2^n)
    assert.equal(sockets.length, 6);
    assert.deepEqual(states, ["reconnecting"]); // one state change, however many retries
    socket().open();
    clock.advance(5_000); // stayed open: the next failure is treated as the first
    socket().drop();
    assert.deepEqual(clock.waiting(), [70]);
    assert.equal(client.state, "reconnecting");
  });

  test("a short-lived connection does not reset the backoff", () => {
    const { socket, clock } = setup({ random: () => 1, backoff: { initial: 100, max: 1000 } });
    socket().drop();
    clock.advance(100);
    socket().open();
    clock.advance(4_999);
    socket().drop();
    assert.deepEqual(clock.waiting(), [200]);
  });

  test("4401 and 4403 close for good: state closed, an error event, no reconnect", async () => {
    for (const code of [4401, 4403]) {
      const { client, sockets, socket, clock, errors, states } = setup();
      socket().open();
      const row = client.subscribeInstance(1);
      const queuedLater = track(client.retrieve(1));
      socket().drop(code, "logged out");
      clock.advance(3_600_000);
      await settle();
      assert.equal(sockets.length, 1);
      assert.equal(client.state, "closed");
      assert.deepEqual(states, ["open", "closed"]);
      assert.equal(errors.length, 1);
      assert.equal(errors[0].status, code);
      assert.equal(queuedLater.state, "rejected");
      await assert.rejects(row.ready, PgObserveError);
      await assert.rejects(client.retrieve(2), /closed/);
    }
  });

  test("close() stops reconnecting and closes the socket", () => {
    const { client, sockets, socket, clock } = setup();
    socket().open();
    const first = socket();
    client.close();
    assert.equal(first.closedWith, 1000);
    first.drop(1000); // the socket's own close event afterwards changes nothing
    clock.advance(60_000);
    assert.equal(sockets.length, 1);
    assert.equal(client.state, "closed");
  });

  test("messages of a replaced socket are ignored", () => {
    const { client, socket, clock } = setup();
    socket().open();
    const old = socket();
    const tasks = client.subscribeQuery({});
    old.receive(reply(old.sent[0], [{ id: 1 }], 201));
    old.drop();
    clock.advance(10_000);
    old.receive(push(old.sent[0], "delete", { pk: 1 }));
    assert.deepEqual(tasks.items, [{ id: 1 }]);
  });
});

describe("LiveCollection", () => {
  /** A ready collection and a function that pushes to it. */
  async function collection(options, snapshot) {
    const env = setup();
    env.socket().open();
    const changes = [];
    const tasks = env.client.subscribeQuery(
      { done: false },
      { ...options, onChange: (items, change) => changes.push({ items, ...change }) },
    );
    const frame = env.socket().sent[0];
    assert.deepEqual(frame, {
      action: "subscribe_query",
      filters: { done: false },
      request_id: tasks.requestId,
    });
    env.socket().receive(reply(frame, snapshot, 201));
    assert.equal(await tasks.ready, tasks);
    const send = (action, data, status) =>
      env.socket().receive(push(frame, action, data, status ?? (action === "delete" ? 204 : 200)));
    return { ...env, tasks, changes, frame, send };
  }
  const ids = (items) => items.map((row) => row.id);

  test("without orderBy: snapshot order, creates appended, updates in place", async () => {
    const { tasks, changes, send } = await collection({}, [{ id: 5 }, { id: 2 }, { id: 7 }]);
    assert.ok(tasks instanceof LiveCollection);
    assert.deepEqual(changes.map((c) => c.type), ["reset"]);
    send("create", { id: 1 }, 201);
    const before = tasks.items;
    send("update", { id: 2, title: "changed" });
    assert.notEqual(tasks.items, before); // a new array for every change
    assert.deepEqual(ids(tasks.items), [5, 2, 7, 1]);
    assert.deepEqual(tasks.get(2), { id: 2, title: "changed" });
    send("delete", { pk: 5 });
    send("delete", { pk: "7" }); // a pk as a string is the same row
    send("delete", { pk: 99 }); // not held: nothing
    assert.deepEqual(ids(tasks.items), [2, 1]);
    assert.deepEqual(
      changes.slice(1).map(({ type, pk, value, previous }) => ({ type, pk, value, previous })),
      [
        { type: "create", pk: 1, value: { id: 1 }, previous: null },
        { type: "update", pk: 2, value: { id: 2, title: "changed" }, previous: { id: 2 } },
        { type: "delete", pk: 5, value: null, previous: { id: 5 } },
        { type: "delete", pk: "7", value: null, previous: { id: 7 } },
      ],
    );
    assert.deepEqual(ids(changes.at(-1).items), [2, 1]);
  });

  test("orderBy keeps the order on create and update", async () => {
    const rows = [
      { id: 1, rank: 2, title: "b" },
      { id: 2, rank: 1, title: "a" },
      { id: 3, rank: 2, title: "a" },
    ];
    const { tasks, send } = await collection({ orderBy: ["-rank", "title"] }, rows);
    assert.deepEqual(ids(tasks.items), [3, 1, 2]); // the snapshot is sorted too
    send("create", { id: 4, rank: 3, title: "z" }, 201);
    send("create", { id: 5, rank: null, title: "n" }, 201); // NULL: first when descending
    assert.deepEqual(ids(tasks.items), [5, 4, 3, 1, 2]);
    send("update", { id: 2, rank: 2, title: "aa" }); // moves between 3 and 1
    assert.deepEqual(ids(tasks.items), [5, 4, 3, 2, 1]);
    send("update", { id: 9, rank: 0, title: "new" }); // an update of a row not held adds it
    send("create", { id: 4, rank: 0, title: "z" }, 201); // a create of a held row updates it
    assert.deepEqual(ids(tasks.items), [5, 3, 2, 1, 9, 4]); // rank 0: by title
  });

  test("orderBy as a function, key as a field", async () => {
    const { tasks, send } = await collection(
      { orderBy: (a, b) => a.code.localeCompare(b.code), key: "code" },
      [{ code: "b" }, { code: "a" }],
    );
    send("create", { code: "aa" }, 201);
    send("delete", { pk: "b" });
    assert.deepEqual(
      tasks.items.map((row) => row.code),
      ["a", "aa"],
    );
  });

  test("pushes before the snapshot are ignored; an error push is an error event", async () => {
    const { client, socket, errors } = setup();
    socket().open();
    const tasks = client.subscribeQuery({});
    const frame = socket().sent[0];
    socket().receive(push(frame, "create", { id: 1 }, 201)); // before the 201
    socket().receive(reply(frame, [{ id: 2 }], 201));
    await tasks.ready;
    assert.deepEqual(ids(tasks.items), [2]);
    socket().receive(push(frame, "update", null, 404));
    assert.equal(errors.length, 1);
    assert.equal(errors[0].status, 404);
  });

  test("a refused subscribe rejects ready, and the subscription ends", async () => {
    const { client, socket, errors } = setup();
    socket().open();
    const tasks = client.subscribeQuery({ nope: 1 });
    const frame = socket().sent[0];
    socket().receive(reply(frame, null, 400, [{ nope: ["not a filterable field"] }]));
    await assert.rejects(tasks.ready, (error) => error.status === 400);
    assert.equal(tasks.active, false);
    assert.equal(errors.length, 1);
  });

  test("unsubscribe stops pushes at once and sends unsubscribe_query with its id", async () => {
    const { tasks, socket, send, frame } = await collection({}, [{ id: 1 }]);
    const done = tasks.unsubscribe();
    const sent = socket().sent.at(-1);
    assert.deepEqual(sent, { action: "unsubscribe_query", request_id: frame.request_id });
    send("delete", { pk: 1 }); // a push between the unsubscribe and its reply
    assert.deepEqual(ids(tasks.items), [1]);
    socket().receive(reply(sent, null, 204));
    assert.equal(await done, undefined);
  });

  test("an exception in onChange is an error event; the collection goes on", async () => {
    const { client, socket, errors } = setup();
    socket().open();
    const tasks = client.subscribeQuery(
      {},
      {
        onChange: (items, change) => {
          if (change.type === "create") throw new Error("render failed");
        },
      },
    );
    socket().receive(reply(socket().sent[0], [], 201));
    socket().receive(push(socket().sent[0], "create", { id: 1 }, 201));
    socket().receive(push(socket().sent[0], "create", { id: 2 }, 201));
    assert.equal(tasks.items.length, 2);
    assert.deepEqual(
      errors.map((e) => e.message),
      ["render failed", "render failed"],
    );
  });
});

describe("convergence after a reconnect", () => {
  test("a collection re-subscribes, takes the fresh snapshot and reports the diff", async () => {
    const { client, sockets, socket, clock } = setup();
    socket().open();
    const changes = [];
    const tasks = client.subscribeQuery(
      { project: 3 },
      { orderBy: ["id"], onChange: (items, change) => changes.push({ items, ...change }) },
    );
    const first = socket().sent[0];
    socket().receive(reply(first, [{ id: 1 }, { id: 2, t: "a" }, { id: 3 }], 201));
    await tasks.ready;
    socket().drop();
    // Away: pushes are lost with the socket; rows change in the database meanwhile.
    clock.advance(10_000);
    assert.equal(sockets.length, 2);
    socket().open();
    const again = socket().sent[0];
    assert.deepEqual(again, first); // same filters, same request_id
    socket().receive(reply(again, [{ id: 4 }, { id: 3 }, { id: 2, t: "b" }], 201));
    assert.deepEqual(tasks.items, [{ id: 2, t: "b" }, { id: 3 }, { id: 4 }]);
    const diff = changes.slice(1).map(({ type, pk }) => `${type} ${pk}`);
    assert.deepEqual(diff, ["delete 1", "update 2", "create 4", "reset null"]);
    for (const change of changes.slice(1)) assert.equal(change.items, tasks.items);
    // Pushes on the new socket apply as before.
    socket().receive(push(again, "delete", { pk: 3 }, 204));
    assert.deepEqual(tasks.items, [{ id: 2, t: "b" }, { id: 4 }]);
  });

  test("a live row re-subscribes with snapshot: true and replaces its value", async () => {
    const { client, socket, clock } = setup();
    socket().open();
    const seen = [];
    const row = client.subscribeInstance(7, { onChange: (value, action) => seen.push([action, value]) });
    const frame = socket().sent[0];
    assert.deepEqual(frame, {
      pk: 7,
      action: "subscribe_instance",
      request_id: row.requestId,
      snapshot: true,
    });
    socket().receive(push(frame, "update", { id: 7, t: "early" })); // before the 201: ignored
    socket().receive(reply(frame, { id: 7, t: "a" }, 201));
    assert.equal(await row.ready, row);
    assert.ok(row instanceof LiveRow);
    socket().receive(push(frame, "update", { id: 7, t: "b" }));
    assert.deepEqual(row.value, { id: 7, t: "b" });

    socket().drop();
    clock.advance(10_000);
    socket().open();
    socket().receive(reply(socket().sent[0], { id: 7, t: "c" }, 201)); // changed while away
    assert.deepEqual(row.value, { id: 7, t: "c" });

    socket().drop();
    clock.advance(10_000);
    socket().open();
    socket().receive(reply(socket().sent[0], null, 404, ["Not found"])); // deleted while away
    assert.equal(row.value, null);
    assert.deepEqual(seen, [
      ["reset", { id: 7, t: "a" }],
      ["update", { id: 7, t: "b" }],
      ["update", { id: 7, t: "c" }],
      ["reset", { id: 7, t: "c" }],
      ["delete", null],
      ["reset", null],
    ]);
    assert.equal(row.active, true); // tried again after the next reconnect
  });

  test("a subscription made while disconnected is sent once, on open", async () => {
    const { client, socket } = setup();
    const row = client.subscribeInstance({ slug: "demo" });
    const queued = track(client.retrieve(1));
    socket().open();
    assert.deepEqual(
      socket().sent.map((f) => f.action),
      ["subscribe_instance", "retrieve"],
    );
    assert.equal(socket().sent[0].slug, "demo");
    socket().receive(reply(socket().sent[0], { slug: "demo" }, 201));
    await row.ready;
    assert.equal(queued.state, "pending");
  });
});

describe("streams (channelsmultiplexer)", () => {
  test("frames are wrapped as {stream, payload} both ways", async () => {
    const { client, socket } = setup();
    socket().open();
    const tasks = client.stream("tasks");
    assert.equal(client.stream("tasks"), tasks);
    const retrieved = track(tasks.retrieve(1));
    const live = tasks.subscribeQuery({ done: true });
    const [retrieveFrame, subscribeFrame] = socket().sent;
    assert.equal(retrieveFrame.stream, "tasks");
    assert.deepEqual(retrieveFrame.payload.action, "retrieve");
    assert.deepEqual(subscribeFrame.payload.filters, { done: true });

    // The same request_id on another stream (or unwrapped) is not this request's reply.
    socket().receive({ stream: "users", payload: reply(retrieveFrame.payload, "wrong") });
    socket().receive(reply(retrieveFrame.payload, "wrong"));
    await settle();
    assert.equal(retrieved.state, "pending");
    socket().receive({ stream: "tasks", payload: reply(retrieveFrame.payload, { id: 1 }) });
    socket().receive({ stream: "tasks", payload: reply(subscribeFrame.payload, [], 201) });
    socket().receive({
      stream: "tasks",
      payload: push(subscribeFrame.payload, "create", { id: 2 }, 201),
    });
    await settle();
    assert.deepEqual(retrieved.value, { id: 1 });
    assert.deepEqual(live.items, [{ id: 2 }]);
  });
});

describe("connect", () => {
  test("a relative URL resolves against the page, https to wss", () => {
    const { client } = setup();
    const WebSocket = client._WebSocket;
    const secure = connect("/ws/tasks/", { WebSocket, location: { href: "https://ex.org/b/" } });
    assert.equal(secure.url, "wss://ex.org/ws/tasks/");
    const plain = connect("ws/x/", { WebSocket, location: { href: "http://ex.org:8000/b/" } });
    assert.equal(plain.url, "ws://ex.org:8000/b/ws/x/");
    assert.throws(() => connect("/ws/", { WebSocket }), /relative/);
    secure.close();
    plain.close();
  });

  test("state events: connecting, open, reconnecting, open", () => {
    const { client, socket, clock, states } = setup();
    assert.equal(client.state, "connecting");
    socket().open();
    socket().drop();
    clock.advance(10_000);
    socket().open();
    assert.deepEqual(states, ["open", "reconnecting", "open"]);
  });

  test("what a state listener subscribes on open is sent once", () => {
    const { client, socket } = setup();
    client.on("state", (state) => state === "open" && client.subscribeQuery({}));
    socket().open();
    assert.deepEqual(
      socket().sent.map((f) => f.action),
      ["subscribe_query"],
    );
  });
});
