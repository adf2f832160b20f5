import { useEffect, useState, type FormEvent } from "react";
import { useApolloClient, useMutation, useQuery } from "@apollo/client/react";

import type { Chat, ConnectionState } from "./apollo";
import { CreateRoomDocument, JoinRoomDocument, LogOutDocument, MeDocument, MyRoomsDocument } from "./generated/graphql";
import { RoomView } from "./RoomView";

export function Rooms({ chat, onSignOut }: { chat: Chat; onSignOut: () => void }) {
  const client = useApolloClient();
  const me = useQuery(MeDocument);
  const rooms = useQuery(MyRoomsDocument);
  const [createRoom] = useMutation(CreateRoomDocument);
  const [joinRoom] = useMutation(JoinRoomDocument);
  const [logOut] = useMutation(LogOutDocument);
  const [selected, setSelected] = useState<string | null>(null);
  const [newName, setNewName] = useState("");
  const [joinId, setJoinId] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [state, setState] = useState<ConnectionState>("connecting");
  useEffect(() => chat.onState((next) => setState(next)), [chat]);

  const revoked = me.data !== undefined && !me.data.me; // the token was revoked elsewhere
  useEffect(() => {
    if (revoked) onSignOut();
  }, [revoked, onSignOut]);

  const act = (work: () => Promise<string | undefined>, clear: () => void) => async (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    try {
      const room = await work();
      clear();
      await rooms.refetch();
      if (room) setSelected(room);
    } catch (failure) {
      setError(failure instanceof Error ? failure.message : String(failure));
    }
  };

  return (
    <div className="layout">
      <aside>
        <header>
          <strong data-testid="me">{me.data?.me?.name ?? "…"}</strong>
          <span className={`state ${state}`} data-testid="connection">{state}</span>
          <button
            className="link"
            onClick={async () => {
              try {
                await logOut(); // refused while the server cannot reach Redis: sign out here anyway
              } finally {
                await client.clearStore();
                onSignOut();
              }
            }}
          >
            Log out
          </button>
        </header>
        <ul data-testid="rooms">
          {rooms.data?.rooms.map((room) => (
            <li key={room.id}>
              <button className={room.id === selected ? "active" : ""} onClick={() => setSelected(room.id)}>
                {room.name} <small>#{room.id}</small>
              </button>
            </li>
          ))}
        </ul>
        <form onSubmit={act(async () => (await createRoom({ variables: { name: newName } })).data?.createRoom.id, () => setNewName(""))}>
          <input placeholder="New room" value={newName} onChange={(e) => setNewName(e.target.value)} data-testid="new-room" />
          <button type="submit" data-testid="create-room">Create</button>
        </form>
        <form onSubmit={act(async () => (await joinRoom({ variables: { room: joinId } })).data?.joinRoom.id, () => setJoinId(""))}>
          <input placeholder="Room id" value={joinId} onChange={(e) => setJoinId(e.target.value)} data-testid="join-id" />
          <button type="submit" data-testid="join-room">Join</button>
        </form>
        {error && <p className="error">{error}</p>}
      </aside>
      <main>
        {selected ? (
          <RoomView
            key={selected}
            room={selected}
            chat={chat}
            onLeft={() => {
              setSelected(null);
              void rooms.refetch();
            }}
          />
        ) : (
          <p>Pick or create a room.</p>
        )}
      </main>
    </div>
  );
}
