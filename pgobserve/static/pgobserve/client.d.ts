// Type declarations for pgobserve's JavaScript client (client.js beside this file).

/** The connection's state: "closed" only after close() or close code 4401/4403. */
export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

/** A pk, or the lookup keys of a consumer with another lookup_field: `{ slug: "demo" }`. */
export type Lookup = string | number | Record<string, unknown>;

export interface BackoffOptions {
  /** Cap of the first reconnect's random wait, ms (default 250). */
  initial?: number;
  /** Largest cap, ms (default 5000). The cap doubles per failed attempt up to this. */
  max?: number;
  /** A connection open this long (ms, default 5000) resets the backoff. */
  resetAfter?: number;
}

export interface ConnectOptions {
  /** The WebSocket class (default globalThis.WebSocket; tests pass a fake). */
  WebSocket?: new (url: string) => WebSocket;
  backoff?: BackoffOptions;
  /** ms from sending a request until it rejects without a reply (default 30000). */
  requestTimeout?: number;
  /** What a relative URL resolves against (default globalThis.location). */
  location?: { href: string };
  /** Test hooks: the jitter's random source, the clock and the timers. */
  random?: () => number;
  now?: () => number;
  timers?: {
    setTimeout(fn: () => void, ms: number): unknown;
    clearTimeout(id: unknown): void;
  };
}

/**
 * A request that failed: `status` is the reply's response_status, 0 when no reply came
 * (timeout, connection lost, client closed), or the close code 4401/4403.
 */
export class PgObserveError extends Error {
  readonly status: number;
  /** DCRF's error list: strings, or `{field: [messages]}` objects. */
  readonly errors: unknown[];
  readonly action: string | null;
  readonly requestId: unknown;
}

export interface LiveRowOptions<T> {
  /** action: a push's action, or "reset" after every snapshot (first and after reconnects). */
  onChange?(value: T | null, action: "create" | "update" | "delete" | "reset"): void;
}

export interface CollectionChange<T> {
  type: "create" | "update" | "delete" | "reset";
  /** The row's pk (null for "reset"). */
  pk: unknown;
  /** The row now (null for "delete" and "reset"). */
  value: T | null;
  /** The row before (null for "create" and "reset"). */
  previous: T | null;
}

export interface LiveCollectionOptions<T> {
  /** Django-style fields ("-id", "project__name"), or a comparator. Default: snapshot order. */
  orderBy?: string[] | ((a: T, b: T) => number);
  /** The pk of a row: a field name or a function. Default: row.pk, else row.id. */
  key?: string | ((row: T) => unknown);
  onChange?(items: readonly T[], change: CollectionChange<T>): void;
}

declare class Subscription<Self> {
  readonly stream: Stream;
  /** The request_id of the subscription, kept across reconnects. */
  readonly requestId: string;
  /** False after unsubscribe(), close(), or a refused first subscribe. */
  readonly active: boolean;
  /** True once the first snapshot arrived. */
  readonly isReady: boolean;
  /** Resolves with the object after the first 201; rejects with a PgObserveError. */
  readonly ready: Promise<Self>;
  /** Stops pushes at once; resolves when the server confirms (or at once if offline). */
  unsubscribe(): Promise<void>;
}

export class LiveRow<T = any> extends Subscription<LiveRow<T>> {
  readonly pk: Lookup;
  /** The serialized row; null when deleted or not visible to this socket. */
  readonly value: T | null;
}

export class LiveCollection<T = any> extends Subscription<LiveCollection<T>> {
  readonly filters: Record<string, unknown>;
  /** The rows in order; a new array after every change. */
  readonly items: readonly T[];
  readonly keyOf: (row: T) => unknown;
  get(pk: unknown): T | undefined;
}

/** Requests and subscriptions on one consumer: the client, or a multiplexer stream. */
export class Stream {
  readonly client: Client;
  /** The channelsmultiplexer stream's name; null for the client itself. */
  readonly name: string | null;
  /** Resolves with the data of a 2xx reply; rejects with a PgObserveError. */
  request<R = any>(action: string, payload?: Record<string, unknown>): Promise<R>;
  create<R = any>(data: Record<string, unknown>): Promise<R>;
  retrieve<R = any>(pk: Lookup): Promise<R>;
  list<R = any>(payload?: Record<string, unknown>): Promise<R>;
  update<R = any>(pk: Lookup, data: Record<string, unknown>): Promise<R>;
  patch<R = any>(pk: Lookup, data: Record<string, unknown>): Promise<R>;
  delete(pk: Lookup): Promise<null>;
  subscribeInstance<T = any>(pk: Lookup, options?: LiveRowOptions<T>): LiveRow<T>;
  subscribeQuery<T = any>(
    filters?: Record<string, unknown>,
    options?: LiveCollectionOptions<T>,
  ): LiveCollection<T>;
}

export class Client extends Stream {
  readonly url: string;
  readonly state: ConnectionState;
  on(event: "state", fn: (state: ConnectionState) => void): () => void;
  /** An error envelope with request_id null, a socket error, a failed subscription,
   * an exception thrown by a handler, or the 4401/4403 close (a PgObserveError). */
  on(event: "error", fn: (error: PgObserveError | Error | Event) => void): () => void;
  /** The channelsmultiplexer stream `name` (one object per name). */
  stream(name: string): Stream;
  /** No reconnect after this; waiting requests reject. */
  close(): void;
}

/** Opens a client; a relative URL resolves against the page (http→ws, https→wss). */
export function connect(url: string | URL, options?: ConnectOptions): Client;

/** The wait before reconnect attempt `attempt`: random() * min(max, initial * 2^attempt). */
export function backoffDelay(
  attempt: number,
  backoff: { initial: number; max: number },
  random?: () => number,
): number;
