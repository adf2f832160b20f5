// Apollo Client with a split link: queries and mutations over HTTP, subscriptions live over
// graphql-ws or Server-Sent Events (the browser's own EventSource), as the page chooses:
//   websocket  graphql-ws; the WebSocket reconnects forever.
//   sse        one EventSource per subscription (GET /graphql?query&variables&operationName, with the
//              cookie session of POST /graphql/sse-session); EventSource reconnects by itself and
//              sends Last-Event-ID, which the server takes as the subscription's `after`: gap-free.
//   auto       WebSocket first; if it has not connected within a few seconds, or closes before it
//              ever connected (a proxy that refuses the upgrade), subscriptions move to SSE.
// Listeners hear the connection state, each reconnection that needs resubscribing, and which
// transport is live.
import { ApolloClient, ApolloLink, HttpLink, InMemoryCache } from "@apollo/client";
import { SetContextLink } from "@apollo/client/link/context";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions";
import { getMainDefinition, print } from "@apollo/client/utilities";
import { createClient, type Client as WsClient } from "graphql-ws";
import { Observable, type Subscription } from "rxjs";

export type ConnectionState = "connecting" | "connected" | "reconnecting";
export type Transport = "auto" | "websocket" | "sse";
export type LiveTransport = "websocket" | "sse";
export const TRANSPORTS: readonly Transport[] = ["auto", "websocket", "sse"];

/** How long `auto` gives the WebSocket to connect before it moves to SSE. */
const WEBSOCKET_GRACE_MS = 4000;

export interface Chat {
  client: ApolloClient;
  /** The transport the page asked for. */
  transport: Transport;
  /** Hears every change of state; called at once with the current one. `reconnected` asks the
   * page to subscribe again from what it has seen (after a WebSocket reconnection; an
   * EventSource resumes by itself and never asks). */
  onState(listener: (state: ConnectionState, reconnected: boolean) => void): () => void;
  /** The transport subscriptions use now (null until one is up); the listener is called at once. */
  live(): LiveTransport | null;
  onLive(listener: (live: LiveTransport | null) => void): () => void;
  /** Hears each time an SSE stream opens, the first time or again (EventSource reconnected by
   * itself), with its operation's name: a state feed such as `myRooms`, which has no resume,
   * reads its state again then (over the WebSocket, `onState`'s `reconnected` says it). */
  onStreamOpened(listener: (operation: string | undefined) => void): () => void;
  dispose(): void;
}

export function readTransport(value: string | null): Transport {
  return TRANSPORTS.includes(value as Transport) ? (value as Transport) : "auto";
}

// The SSE cookie session belongs to the browser, not to one chat: its requests go out in order, and
// a chat that goes away clears it only if no other chat (the one replacing it) is alive.
let sessionRequests: Promise<unknown> = Promise.resolve();
const inOrder = <T>(work: () => Promise<T>): Promise<T> => {
  const next = sessionRequests.then(work, work);
  sessionRequests = next.catch(() => undefined);
  return next;
};
const aliveChats = new Set<object>();
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

class SessionRefused extends Error {}

type StreamState = "connecting" | "open" | "reconnecting";

/** Subscriptions over SSE: the session cookie, one EventSource per subscription, and the state of them all. */
class SseTransport {
  private session: Promise<void> | null = null;
  private sessionUp = false;
  private streams = new Map<object, StreamState>();
  private closers = new Set<() => void>();
  private disposed = false;
  readonly link: ApolloLink;

  constructor(
    private token: string,
    private changed: () => void,
    private opened: (operation: string | undefined) => void,
  ) {
    this.link = new ApolloLink((operation) => this.stream(operation));
  }

  state(): ConnectionState {
    if (!this.sessionUp) return "connecting";
    return [...this.streams.values()].includes("reconnecting") ? "reconnecting" : "connected";
  }

  /** POST /graphql/sse-session until it answers: the cookie every EventSource of this page carries. */
  start(): Promise<void> {
    this.session ??= (async () => {
      for (let attempt = 0; ; attempt++) {
        if (this.disposed) throw new Error("the chat was closed");
        try {
          const response = await inOrder(() =>
            fetch("/graphql/sse-session", {
              method: "POST",
              headers: { authorization: `Bearer ${this.token}` },
              credentials: "same-origin",
            }),
          );
          if (response.ok) break;
          if (response.status === 401) throw new SessionRefused("the server refused the token for SSE");
        } catch (failure) {
          if (failure instanceof SessionRefused) throw failure;
        }
        await sleep(Math.min(500 * 2 ** attempt, 8000));
      }
      this.sessionUp = true;
      this.changed();
    })();
    return this.session;
  }

  private track(stream: object, state: StreamState | null) {
    const before = this.state();
    if (state === null) this.streams.delete(stream);
    else this.streams.set(stream, state);
    if (this.state() !== before) this.changed();
  }

  private stream(operation: ApolloLink.Operation): Observable<ApolloLink.Result> {
    return new Observable<ApolloLink.Result>((observer) => {
      const stream = {};
      const variables: Record<string, unknown> = { ...operation.variables };
      let source: EventSource | null = null;
      let ended = false;
      let everOpen = false;
      let lastEventId = "";
      let retry: ReturnType<typeof setTimeout> | undefined;
      let attempt = 0;

      const end = () => {
        ended = true;
        clearTimeout(retry);
        source?.close();
        this.closers.delete(end);
        this.track(stream, null);
      };
      this.closers.add(end);
      const open = () => {
        if (ended || this.disposed) return;
        const params = new URLSearchParams({ query: print(operation.query), variables: JSON.stringify(variables) });
        if (operation.operationName) params.set("operationName", operation.operationName);
        const current = new EventSource(`/graphql?${params}`);
        source = current;
        this.track(stream, everOpen ? "reconnecting" : "connecting");
        current.addEventListener("open", () => {
          everOpen = true;
          attempt = 0;
          this.track(stream, "open");
          this.opened(operation.operationName);
        });
        current.addEventListener("next", (event) => {
          const message = event as MessageEvent<string>;
          lastEventId = message.lastEventId;
          observer.next(JSON.parse(message.data) as ApolloLink.Result);
        });
        current.addEventListener("complete", () => {
          end();
          observer.complete();
        });
        current.addEventListener("error", () => {
          if (ended || current !== source) return;
          // Still CONNECTING: the stream broke (a restart, a drain, the network) and EventSource is
          // reconnecting by itself, with Last-Event-ID: nothing to do but show it.
          if (current.readyState === EventSource.CONNECTING) {
            this.track(stream, "reconnecting");
            return;
          }
          current.close();
          if (!everOpen) {
            // Refused before it ever streamed: a request the server will not run (an HTTP error).
            end();
            observer.error(new Error(`the server refused the event stream of ${operation.operationName ?? "a subscription"}`));
            return;
          }
          // It streamed, and then a reconnection was answered with an error status (a proxy, a
          // drain): EventSource has given up, so a fresh one starts from the last event seen
          // (the server takes `after` as it takes Last-Event-ID).
          if (lastEventId && "after" in variables) variables.after = lastEventId;
          this.track(stream, "reconnecting");
          retry = setTimeout(open, Math.min(1000 * 2 ** attempt++, 15000));
        });
      };

      this.start().then(open, (failure: Error) => {
        if (ended) return;
        end();
        observer.error(failure);
      });
      return () => {
        if (!ended) end();
      };
    });
  }

  dispose() {
    this.disposed = true;
    [...this.closers].forEach((close) => close());
  }
}

export function createChat(token: string, transport: Transport = "auto"): Chat {
  const self = {};
  aliveChats.add(self);
  const listeners = new Set<(state: ConnectionState, reconnected: boolean) => void>();
  const liveListeners = new Set<(live: LiveTransport | null) => void>();
  let state: ConnectionState = "connecting";
  let live: LiveTransport | null = null;
  let disposed = false;
  const emit = (next: ConnectionState, reconnected = false) => {
    if (disposed || (next === state && !reconnected)) return;
    state = next;
    listeners.forEach((listen) => listen(next, reconnected));
  };
  const goLive = (next: LiveTransport | null) => {
    if (disposed || next === live) return;
    live = next;
    liveListeners.forEach((listen) => listen(next));
  };

  const openListeners = new Set<(operation: string | undefined) => void>();
  const sse = new SseTransport(
    token,
    () => {
      if (mode !== "sse") return;
      if (sse.state() === "connected") goLive("sse");
      emit(sse.state());
    },
    (operation) => !disposed && openListeners.forEach((listen) => listen(operation)),
  );
  let mode: LiveTransport = transport === "sse" ? "sse" : "websocket";

  // Subscriptions that `auto` moves from the WebSocket to SSE: each one restarts on the new transport.
  const restarts = new Set<() => void>();
  let ws: WsClient | null = null;
  let wsLink: ApolloLink | null = null;
  let everConnected = false;
  let grace: ReturnType<typeof setTimeout> | undefined;

  const fallBack = () => {
    if (mode === "sse" || everConnected || disposed) return;
    clearTimeout(grace);
    mode = "sse";
    const moving = [...restarts];
    moving.forEach((restart) => restart());
    void ws?.dispose();
    ws = null;
    emit(sse.state());
    void sse.start();
  };

  if (transport !== "sse") {
    ws = createClient({
      url: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/graphql`,
      connectionParams: { authorization: `Bearer ${token}` },
      lazy: false, // connect on sign-in, so the page shows its real connection state
      retryAttempts: Infinity,
      shouldRetry: () => true,
      keepAlive: 10_000,
      on: {
        connecting: () => mode === "websocket" && emit(everConnected ? "reconnecting" : "connecting"),
        connected: () => {
          if (mode !== "websocket") return;
          clearTimeout(grace);
          goLive("websocket");
          emit("connected", everConnected);
          everConnected = true;
        },
        closed: () => {
          if (mode !== "websocket") return;
          if (everConnected) emit("reconnecting");
          else if (transport === "auto") fallBack(); // refused before it ever connected
        },
      },
    });
    wsLink = new GraphQLWsLink(ws);
    if (transport === "auto") grace = setTimeout(fallBack, WEBSOCKET_GRACE_MS);
  } else {
    void sse.start();
  }

  const subscriptions =
    transport === "websocket"
      ? wsLink!
      : transport === "sse"
        ? sse.link
        : new ApolloLink(
            (operation, forward) =>
              new Observable<ApolloLink.Result>((observer) => {
                let inner: Subscription | undefined;
                const restart = () => {
                  inner?.unsubscribe();
                  const link = mode === "sse" || !wsLink ? sse.link : wsLink;
                  inner = link.request(operation, forward).subscribe({
                    next: (result) => observer.next(result),
                    error: (failure) => {
                      restarts.delete(restart);
                      observer.error(failure);
                    },
                    complete: () => {
                      restarts.delete(restart);
                      observer.complete();
                    },
                  });
                };
                restarts.add(restart);
                restart();
                return () => {
                  restarts.delete(restart);
                  inner?.unsubscribe();
                };
              }),
          );

  const auth = new SetContextLink((previous) => ({
    headers: { ...previous.headers, authorization: `Bearer ${token}` },
  }));
  const link = ApolloLink.split(
    ({ query }) => {
      const definition = getMainDefinition(query);
      return definition.kind === "OperationDefinition" && definition.operation === "subscription";
    },
    subscriptions,
    auth.concat(new HttpLink({ uri: "/graphql" })),
  );
  const client = new ApolloClient({ link, cache: new InMemoryCache() });
  return {
    client,
    transport,
    onState(listener) {
      listeners.add(listener);
      listener(state, false);
      return () => listeners.delete(listener);
    },
    live: () => live,
    onLive(listener) {
      liveListeners.add(listener);
      listener(live);
      return () => liveListeners.delete(listener);
    },
    onStreamOpened(listener) {
      openListeners.add(listener);
      return () => openListeners.delete(listener);
    },
    dispose() {
      if (disposed) return;
      disposed = true;
      clearTimeout(grace);
      aliveChats.delete(self);
      client.stop();
      void ws?.dispose();
      sse.dispose();
      // Signed out (no chat replaces this one): the browser forgets the SSE cookie too.
      if (aliveChats.size === 0) {
        void inOrder(() => fetch("/graphql/sse-session", { method: "DELETE", credentials: "same-origin" })).catch(
          () => undefined,
        );
      }
    },
  };
}

export function anonymousClient(): ApolloClient {
  return new ApolloClient({ link: new HttpLink({ uri: "/graphql" }), cache: new InMemoryCache() });
}
