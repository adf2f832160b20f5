import { useState, type FormEvent } from "react";
import { useApolloClient, useQuery } from "@apollo/client/react";

import { JoinRoomDocument, PublicRoomsDocument, type ListedRoomFragment } from "./generated/graphql";

/** PUBLIC rooms, most members first, searched by name: join one, or open one already mine.
 * PRIVATE and DIRECT rooms are never here (the server lists PUBLIC rooms alone). */
export function Directory({ onOpen, onJoined }: { onOpen: (room: string) => void; onJoined: (room: ListedRoomFragment) => void }) {
  const client = useApolloClient();
  const [typed, setTyped] = useState("");
  const [search, setSearch] = useState<string | null>(null);
  const found = useQuery(PublicRoomsDocument, { variables: { search }, fetchPolicy: "network-only" });
  const [error, setError] = useState<string | null>(null);

  const submit = (event: FormEvent) => {
    event.preventDefault();
    setSearch(typed.trim() || null);
  };
  const join = async (room: string) => {
    setError(null);
    try {
      const { data } = await client.mutate({ mutation: JoinRoomDocument, variables: { room } });
      if (data) onJoined(data.joinRoom);
      onOpen(room);
    } catch (failure) {
      setError(failure instanceof Error ? failure.message : String(failure));
    }
  };

  const rooms = found.data?.publicRooms ?? [];
  return (
    <section className="directory">
      <h2>Public rooms</h2>
      <form onSubmit={submit}>
        <input placeholder="Search by name" value={typed} onChange={(e) => setTyped(e.target.value)} data-testid="directory-search" />
        <button type="submit" data-testid="directory-go">Search</button>
      </form>
      <ul data-testid="directory" data-loading={found.loading}>
        {rooms.map((room) => (
          <li key={room.id} data-room={room.id}>
            <span>
              <b>{room.name}</b> <small>{room.memberCount} {room.memberCount === 1 ? "member" : "members"}</small>
              {room.topic && <span className="topic"> · {room.topic}</span>}
            </span>
            {room.myRole ? (
              <button className="link" onClick={() => onOpen(room.id)} data-testid="directory-open">
                Open
              </button>
            ) : (
              <button onClick={() => void join(room.id)} data-testid="directory-join">
                Join
              </button>
            )}
          </li>
        ))}
        {!found.loading && rooms.length === 0 && <li className="empty" data-testid="directory-empty">No public room found.</li>}
      </ul>
      {(error ?? found.error) && <p className="error">{error ?? found.error?.message}</p>}
    </section>
  );
}
