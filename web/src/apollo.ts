// Apollo Client with a split link: queries and mutations over HTTP, subscriptions over
// graphql-ws. The WebSocket reconnects forever; listeners hear its state and each reconnection.
import { ApolloClient, ApolloLink, HttpLink, InMemoryCache } from "@apollo/client";
import { SetContextLink } from "@apollo/client/link/context";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions";
import { getMainDefinition } from "@apollo/client/utilities";
import { createClient } from "graphql-ws";

export type ConnectionState = "connecting" | "connected" | "reconnecting";

export interface Chat {
  client: ApolloClient;
  onState(listener: (state: ConnectionState, reconnected: boolean) => void): () => void;
  dispose(): void;
}

export function createChat(token: string): Chat {
  const listeners = new Set<(state: ConnectionState, reconnected: boolean) => void>();
  let everConnected = false;
  const emit = (state: ConnectionState, reconnected = false) => listeners.forEach((listen) => listen(state, reconnected));

  const wsUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/graphql`;
  const ws = createClient({
    url: wsUrl,
    connectionParams: { authorization: `Bearer ${token}` },
    lazy: false, // connect on sign-in, so the page shows its real connection state
    retryAttempts: Infinity,
    shouldRetry: () => true,
    keepAlive: 10_000,
    on: {
      connecting: () => emit(everConnected ? "reconnecting" : "connecting"),
      connected: () => {
        emit("connected", everConnected);
        everConnected = true;
      },
      closed: () => everConnected && emit("reconnecting"),
    },
  });

  const auth = new SetContextLink((previous) => ({
    headers: { ...previous.headers, authorization: `Bearer ${token}` },
  }));
  const link = ApolloLink.split(
    ({ query }) => {
      const definition = getMainDefinition(query);
      return definition.kind === "OperationDefinition" && definition.operation === "subscription";
    },
    new GraphQLWsLink(ws),
    auth.concat(new HttpLink({ uri: "/graphql" })),
  );
  const client = new ApolloClient({ link, cache: new InMemoryCache() });
  return {
    client,
    onState(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    dispose() {
      client.stop();
      void ws.dispose();
    },
  };
}

export function anonymousClient(): ApolloClient {
  return new ApolloClient({ link: new HttpLink({ uri: "/graphql" }), cache: new InMemoryCache() });
}
