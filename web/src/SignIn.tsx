import { useState, type FormEvent } from "react";

import { anonymousClient } from "./apollo";
import { LogInDocument, SignUpDocument } from "./generated/graphql";

const client = anonymousClient();

/** `invited`: the address holds an invite, joined as soon as this person is signed in. */
export function SignIn({ onToken, invited = false }: { onToken: (token: string) => void; invited?: boolean }) {
  const [mode, setMode] = useState<"signUp" | "logIn">("signUp");
  const [name, setName] = useState("");
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(null);

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    try {
      if (mode === "signUp") {
        const { data } = await client.mutate({ mutation: SignUpDocument, variables: { name, email, password } });
        if (data) onToken(data.signUp.token);
      } else {
        const { data } = await client.mutate({ mutation: LogInDocument, variables: { email, password } });
        if (data) onToken(data.logIn.token);
      }
    } catch (failure) {
      setError(failure instanceof Error ? failure.message : String(failure));
    }
  };

  return (
    <form className="card" onSubmit={submit} data-testid="sign-in">
      <h1>{mode === "signUp" ? "Create an account" : "Log in"}</h1>
      {invited && (
        <p className="invited" data-testid="invite-pending">
          You were invited to a room: sign up or log in, and you will join it.
        </p>
      )}
      {mode === "signUp" && (
        <input placeholder="Name" value={name} onChange={(e) => setName(e.target.value)} data-testid="name" />
      )}
      <input placeholder="Email" type="email" value={email} onChange={(e) => setEmail(e.target.value)} data-testid="email" />
      <input
        placeholder="Password"
        type="password"
        value={password}
        onChange={(e) => setPassword(e.target.value)}
        data-testid="password"
      />
      <button type="submit" data-testid="submit">{mode === "signUp" ? "Sign up" : "Log in"}</button>
      <button type="button" className="link" onClick={() => setMode(mode === "signUp" ? "logIn" : "signUp")}>
        {mode === "signUp" ? "I have an account" : "I need an account"}
      </button>
      {error && <p className="error" data-testid="error">{error}</p>}
    </form>
  );
}
