import { useCallback, useEffect, useMemo, useState } from "react";
import { ApolloProvider } from "@apollo/client/react";

import { createChat, readTransport, type Transport } from "./apollo";
import { SignIn } from "./SignIn";
import { Rooms } from "./Rooms";
import { readRoute, showRoute, type Route } from "./route";

const TOKEN_KEY = "chat.token";
const TRANSPORT_KEY = "chat.transport"; // auto | websocket | sse: how live updates arrive
const INVITE_KEY = "chat.invite"; // an invite opened while signed out, joined once signed in

export function App() {
  const [token, setToken] = useState<string | null>(() => localStorage.getItem(TOKEN_KEY));
  const [transport, setTransport] = useState<Transport>(() => readTransport(localStorage.getItem(TRANSPORT_KEY)));
  const [route, setRoute] = useState<Route>(() => {
    const first = readRoute();
    return { ...first, invite: first.invite ?? sessionStorage.getItem(INVITE_KEY) };
  });
  useEffect(() => {
    const changed = () => setRoute(readRoute());
    window.addEventListener("hashchange", changed);
    return () => window.removeEventListener("hashchange", changed);
  }, []);
  useEffect(() => {
    // Kept for this tab across a sign-up or log-in (and a reload meanwhile), until it is used.
    if (route.invite) sessionStorage.setItem(INVITE_KEY, route.invite);
    else sessionStorage.removeItem(INVITE_KEY);
  }, [route.invite]);
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
  const inviteUsed = useCallback((room: string | null) => {
    showRoute(room);
    setRoute({ room, invite: null });
  }, []);

  if (!chat) return <SignIn onToken={signedIn} invited={route.invite !== null} />;
  return (
    <ApolloProvider client={chat.client}>
      <Rooms
        chat={chat}
        onSignOut={signedOut}
        onTransport={chooseTransport}
        route={route}
        onInviteUsed={inviteUsed}
      />
    </ApolloProvider>
  );
}
