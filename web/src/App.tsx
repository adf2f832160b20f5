import { useCallback, useEffect, useMemo, useState } from "react";
import { ApolloProvider } from "@apollo/client/react";

import { createChat } from "./apollo";
import { SignIn } from "./SignIn";
import { Rooms } from "./Rooms";

const TOKEN_KEY = "chat.token";

export function App() {
  const [token, setToken] = useState<string | null>(() => localStorage.getItem(TOKEN_KEY));
  const chat = useMemo(() => (token ? createChat(token) : null), [token]);
  useEffect(() => () => chat?.dispose(), [chat]);

  const signedIn = useCallback((next: string | null) => {
    if (next) localStorage.setItem(TOKEN_KEY, next);
    else localStorage.removeItem(TOKEN_KEY);
    setToken(next);
  }, []);
  const signedOut = useCallback(() => signedIn(null), [signedIn]);

  if (!chat) return <SignIn onToken={signedIn} />;
  return (
    <ApolloProvider client={chat.client}>
      <Rooms chat={chat} onSignOut={signedOut} />
    </ApolloProvider>
  );
}
