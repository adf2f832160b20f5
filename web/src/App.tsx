import { useCallback, useEffect, useMemo, useState } from "react";
import { ApolloProvider } from "@apollo/client/react";

import { createChat, readTransport, type Transport } from "./apollo";
import { SignIn } from "./SignIn";
import { Rooms } from "./Rooms";

const TOKEN_KEY = "chat.token";
const TRANSPORT_KEY = "chat.transport"; // auto | websocket | sse: how live updates arrive

export function App() {
  const [token, setToken] = useState<string | null>(() => localStorage.getItem(TOKEN_KEY));
  const [transport, setTransport] = useState<Transport>(() => readTransport(localStorage.getItem(TRANSPORT_KEY)));
  // A new transport is a new chat client: the page subscribes again, from what it has seen.
  const chat = useMemo(() => (token ? createChat(token, transport) : null), [token, transport]);
  useEffect(() => () => chat?.dispose(), [chat]);

  const signedIn = useCallback((next: string | null) => {
    if (next) localStorage.setItem(TOKEN_KEY, next);
    else localStorage.removeItem(TOKEN_KEY);
    setToken(next);
  }, []);
  const signedOut = useCallback(() => signedIn(null), [signedIn]);
  const chooseTransport = useCallback((next: Transport) => {
    localStorage.setItem(TRANSPORT_KEY, next);
    setTransport(next);
  }, []);

  if (!chat) return <SignIn onToken={signedIn} />;
  return (
    <ApolloProvider client={chat.client}>
      <Rooms chat={chat} onSignOut={signedOut} onTransport={chooseTransport} />
    </ApolloProvider>
  );
}
