import { useEffect, useRef, useState, type FormEvent } from "react";
import { useApolloClient, useMutation, useQuery } from "@apollo/client/react";

import type { Chat, ConnectionState, LiveTransport, Transport } from "./apollo";
import {
  CreateRoomDocument,
  JoinRoomDocument,
  LogOutDocument,
  MeDocument,
  MyRoomsDocument,
  RoomActivityDocument,
  RoomUnreadDocument,
} from "./generated/graphql";
import { RoomView } from "./RoomView";

export function Rooms({
  chat,
  onSignOut,
  onTransport,
}: {
  chat: Chat;
  onSignOut: () => void;
  onTransport: (transport: Transport) => void;
}) {
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
  const [generation, setGeneration] = useState(0);
  const [live, setLive] = useState<LiveTransport | null>(null);
  useEffect(
    () =>
      chat.onState((next, reconnected) => {
        setState(next);
        if (reconnected) setGeneration((g) => g + 1);
      }),
    [chat],
  );
  useEffect(() => chat.onLive(setLive), [chat]);

  // Unread badges: counted by the server, then kept live by each room's log (a message from
  // someone else adds one; my own read, on any device, asks the server again).
  const [unread, setUnread] = useState<Map<string, number>>(new Map());
  const cursors = useRef(new Map<string, string | null>());
  const selectedRef = useRef(selected);
  selectedRef.current = selected;
  const meId = me.data?.me?.id;
  useEffect(() => {
    // A room's count and cursor are taken from the server together, once: from then on its log
    // keeps the count (the subscription resumes from the cursor). The list changes for other
    // reasons too (a room's page or a read updates the cache), and its count may be older than
    // the log's: taking it again would forget what arrived since.
    const list = rooms.data?.rooms ?? [];
    const known = new Set(list.filter((room) => cursors.current.has(room.id)).map((room) => room.id));
    setUnread((current) => new Map(list.map((room) => [room.id, known.has(room.id) ? (current.get(room.id) ?? 0) : room.unreadCount])));
    for (const room of list) if (!known.has(room.id)) cursors.current.set(room.id, room.latestEventCursor ?? null);
    const listed = new Set(list.map((room) => room.id));
    for (const id of [...cursors.current.keys()]) if (!listed.has(id)) cursors.current.delete(id); // left: taken afresh if back
  }, [rooms.data]);
  useEffect(() => {
    if (!meId) return;
    const subscriptions = (rooms.data?.rooms ?? []).map((room) =>
      client
        .subscribe({ query: RoomActivityDocument, variables: { room: room.id, after: cursors.current.get(room.id) ?? null } })
        .subscribe({
          next: ({ data }) => {
            if (!data) return;
            const event = data.roomEvents;
            cursors.current.set(room.id, event.cursor);
            if (event.__typename === "MessageCreated" && event.message.sender.id !== meId && selectedRef.current !== room.id) {
              setUnread((current) => new Map(current).set(room.id, (current.get(room.id) ?? 0) + 1));
            } else if (event.__typename === "ReadUpTo" && event.user.id === meId) {
              client
                .query({ query: RoomUnreadDocument, variables: { id: room.id }, fetchPolicy: "network-only" })
                .then(({ data: fresh }) => fresh?.room && setUnread((current) => new Map(current).set(room.id, fresh.room!.unreadCount)))
                .catch(() => undefined);
            }
          },
        }),
    );
    return () => subscriptions.forEach((subscription) => subscription.unsubscribe());
  }, [client, rooms.data, meId, generation]);

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
        <label style={{ display: "flex", gap: 6, alignItems: "center", fontSize: 12, color: "#666" }}>
          Live updates
          <select
            value={chat.transport}
            onChange={(event) => onTransport(event.target.value as Transport)}
            data-testid="transport"
          >
            <option value="auto">auto</option>
            <option value="websocket">WebSocket</option>
            <option value="sse">SSE</option>
          </select>
          <span title="the transport live updates use now" data-testid="live-transport">
            {live ?? "none"}
          </span>
        </label>
        <ul data-testid="rooms">
          {rooms.data?.rooms.map((room) => (
            <li key={room.id}>
              <button className={room.id === selected ? "active" : ""} onClick={() => setSelected(room.id)}>
                {room.name} <small>#{room.id}</small>
                {(unread.get(room.id) ?? 0) > 0 && (
                  <span className="badge" data-testid={`unread-${room.id}`}>
                    {unread.get(room.id)}
                  </span>
                )}
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
            me={meId ?? ""}
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
