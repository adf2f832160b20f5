import { useCallback, useEffect, useRef, useState, type FormEvent } from "react";
import { useApolloClient, useMutation, useQuery } from "@apollo/client/react";

import type { Chat, ConnectionState, LiveTransport, Transport } from "./apollo";
import { showRoute, type Route } from "./route";
import { Directory } from "./Directory";
import {
  CreateRoomDocument,
  DirectPeopleDocument,
  JoinByInviteDocument,
  JoinRoomDocument,
  ListedRoomFragmentDoc,
  LogOutDocument,
  MeDocument,
  MyRoomChangesDocument,
  MyRoomsDocument,
  OpenDirectDocument,
  type ListedRoomFragment,
  type MyRoomChangesSubscription,
  type RoomKind,
} from "./generated/graphql";
import { RoomView } from "./RoomView";

type Change = MyRoomChangesSubscription["myRooms"];

/** `rooms(first:)` in MyRooms (operations.graphql): a shorter page is the list's last. */
const ROOM_PAGE = 30;

/** The room list's first page is read once (and again after a reconnection), later pages when
 * "More rooms" is pressed, and it is kept live by ONE `myRooms`
 * subscription: ADDED puts a room in it, REMOVED takes it out, UPDATED (a new message, my unread
 * count, a rename, my role) rewrites it in Apollo's cache. A room's unread count comes from the
 * server alone: from the list, then from each note (read for me when it was sent), never counted
 * here. A list read that crosses notes keeps what the notes said: whatever a note brought (or a
 * room this page joined) since the read was asked for is newer than the read may be, and any
 * later change brings a note of its own. */
export function Rooms({
  chat,
  onSignOut,
  onTransport,
  route,
  onInviteUsed,
}: {
  chat: Chat;
  onSignOut: () => void;
  onTransport: (transport: Transport) => void;
  route: Route;
  onInviteUsed: (room: string | null) => void;
}) {
  const client = useApolloClient();
  const me = useQuery(MeDocument);
  const rooms = useQuery(MyRoomsDocument, { fetchPolicy: "cache-only" });
  const [createRoom] = useMutation(CreateRoomDocument);
  const [joinRoom] = useMutation(JoinRoomDocument);
  const [logOut] = useMutation(LogOutDocument);
  const [selected, setSelected] = useState<string | null>(route.room);
  const [directory, setDirectory] = useState(false);
  const [removed, setRemoved] = useState<Set<string>>(new Set());
  const [newName, setNewName] = useState("");
  const [newTopic, setNewTopic] = useState("");
  const [newKind, setNewKind] = useState<RoomKind>("PRIVATE");
  const [joinId, setJoinId] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [state, setState] = useState<ConnectionState>("connecting");
  const [generation, setGeneration] = useState(0);
  const [live, setLive] = useState<LiveTransport | null>(null);
  const selectedRef = useRef(selected);
  selectedRef.current = selected;
  const leaving = useRef<string | null>(null);
  useEffect(
    () =>
      chat.onState((next, reconnected) => {
        setState(next);
        if (reconnected) setGeneration((g) => g + 1);
      }),
    [chat],
  );
  useEffect(() => chat.onLive(setLive), [chat]);
  const meId = me.data?.me?.id;

  // What changed since the list read under way was asked for: "present" (a note or this page put
  // it there, as it is now) or "removed".
  const noted = useRef(new Map<string, "present" | "removed">());
  const reads = useRef(0);
  // The last room of the last page read from the server, while there may be more after it.
  const [next, setNext] = useState<string | null>(null);

  const put = useCallback(
    (room: ListedRoomFragment) => {
      noted.current.set(room.id, "present");
      // In it again (an invite after a kick): its view may open as any other.
      setRemoved((current) => (current.has(room.id) ? new Set([...current].filter((id) => id !== room.id)) : current));
      client.cache.writeFragment({
        fragment: ListedRoomFragmentDoc,
        fragmentName: "ListedRoom",
        id: client.cache.identify({ __typename: "Room", id: room.id }),
        data: room,
      });
      client.cache.updateQuery({ query: MyRoomsDocument }, (data) =>
        data && !data.rooms.some((listed) => listed.id === room.id) ? { rooms: [...data.rooms, room] } : data,
      );
    },
    [client],
  );

  const readList = useCallback(async () => {
    const read = ++reads.current;
    noted.current = new Map();
    const { data } = await client.query({ query: MyRoomsDocument, fetchPolicy: "no-cache" });
    if (read !== reads.current || !data) return; // a later read is under way
    setNext(data.rooms.length === ROOM_PAGE ? data.rooms[data.rooms.length - 1].id : null);
    const changed = noted.current;
    const now = (id: string) =>
      client.cache.readFragment({
        fragment: ListedRoomFragmentDoc,
        fragmentName: "ListedRoom",
        id: client.cache.identify({ __typename: "Room", id }),
      });
    const list = data.rooms
      .filter((room) => changed.get(room.id) !== "removed")
      .map((room) => (changed.get(room.id) === "present" ? (now(room.id) ?? room) : room));
    for (const [id, what] of changed) {
      const room = what === "present" && !list.some((listed) => listed.id === id) ? now(id) : null;
      if (room) list.push(room);
    }
    client.writeQuery({ query: MyRoomsDocument, data: { rooms: list } });
  }, [client]);

  // The next page, after the last room of the last page read: appended where not listed yet (a
  // note may have put a room of it there already, as it is now) nor removed since.
  const readMore = useCallback(async () => {
    if (next === null) return;
    const read = reads.current;
    const { data } = await client.query({ query: MyRoomsDocument, variables: { after: next }, fetchPolicy: "no-cache" });
    if (read !== reads.current || !data) return; // the list was read again meanwhile
    setNext(data.rooms.length === ROOM_PAGE ? data.rooms[data.rooms.length - 1].id : null);
    client.cache.updateQuery({ query: MyRoomsDocument }, (current) => {
      if (!current) return current;
      const listed = new Set(current.rooms.map((room) => room.id));
      const added = data.rooms.filter((room) => !listed.has(room.id) && noted.current.get(room.id) !== "removed");
      return { rooms: [...current.rooms, ...added] };
    });
  }, [client, next]);

  const change = useCallback(
    ({ change: kind, roomId, room }: Change) => {
      if (kind === "REMOVED" || !room) {
        noted.current.set(roomId, "removed");
        client.cache.updateQuery({ query: MyRoomsDocument }, (data) =>
          data ? { rooms: data.rooms.filter((listed) => listed.id !== roomId) } : data,
        );
        // Removed (kicked, banned) while looking at it: its view ends, and says so.
        if (selectedRef.current === roomId && leaving.current !== roomId) setRemoved((current) => new Set(current).add(roomId));
        return;
      }
      put(room);
    },
    [client, put],
  );

  // The feed first, then the list (again after every reconnection: the feed has no resume).
  useEffect(() => {
    const feed = client.subscribe({ query: MyRoomChangesDocument, fetchPolicy: "no-cache" }).subscribe({
      next: ({ data }) => data && change(data.myRooms),
    });
    readList().catch((failure: Error) => setError(failure.message));
    return () => feed.unsubscribe();
  }, [client, change, readList, generation]);
  // Over SSE the feed's EventSource reconnects by itself (and opens later than the WebSocket
  // would): the list is read again each time it opens.
  useEffect(
    () =>
      chat.onStreamOpened((operation) => {
        if (operation === "MyRoomChanges") readList().catch(() => undefined);
      }),
    [chat, readList],
  );

  const revoked = me.data !== undefined && !me.data.me; // the token was revoked elsewhere
  useEffect(() => {
    if (revoked) onSignOut();
  }, [revoked, onSignOut]);

  // `fresh`: the room was joined just now, so its view starts again (it may have been showing
  // "not found" for the very same room a moment ago).
  const [opened, setOpened] = useState(0);
  const open = useCallback((room: string | null, fresh = false) => {
    setDirectory(false);
    setSelected(room);
    selectedRef.current = room; // a note that arrives before the next render sees it already
    if (fresh) {
      setOpened((n) => n + 1);
      setError(null);
    }
  }, []);
  useEffect(() => {
    if (!route.invite) showRoute(selected);
  }, [selected, route.invite]);
  useEffect(() => {
    if (route.room) open(route.room);
  }, [route.room, open]);

  // An invite in the address: joined (once while the request is under way), then its room opens.
  const joining = useRef(new Set<string>());
  useEffect(() => {
    const code = route.invite;
    if (!code || joining.current.has(code)) return;
    joining.current.add(code);
    client
      .mutate({ mutation: JoinByInviteDocument, variables: { code } })
      .finally(() => joining.current.delete(code))
      .then(({ data }) => {
        const room = data?.joinByInvite;
        if (room) {
          put(room);
          open(room.id, true);
        }
        onInviteUsed(room?.id ?? null);
      })
      .catch((failure: Error) => {
        setError(`This invite link does not work (${failure.message})`);
        onInviteUsed(null);
      });
  }, [client, route.invite, put, open, onInviteUsed]);

  const act = (work: () => Promise<ListedRoomFragment | undefined>, clear: () => void) => async (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    try {
      const room = await work();
      clear();
      if (room) {
        put(room);
        open(room.id, true);
      }
    } catch (failure) {
      setError(failure instanceof Error ? failure.message : String(failure));
    }
  };

  const direct = useCallback(
    async (user: string) => {
      const { data } = await client.mutate({ mutation: OpenDirectDocument, variables: { users: [user] } });
      if (data) {
        put(data.openDirect);
        open(data.openDirect.id);
      }
    },
    [client, put, open],
  );

  const leave = useCallback(
    async (room: string, work: () => Promise<unknown>) => {
      leaving.current = room;
      try {
        await work();
        change({ change: "REMOVED", roomId: room, room: null });
        open(null);
      } finally {
        leaving.current = null;
      }
    },
    [change, open],
  );

  const listed = rooms.data?.rooms ?? [];
  const item = (room: ListedRoomFragment) => {
    const unread = room.id === selected ? 0 : room.unreadCount;
    const last = room.lastMessage;
    return (
      <li key={room.id} data-room={room.id} data-kind={room.kind}>
        <button
          className={room.id === selected && !directory ? "active" : ""}
          onClick={() => open(room.id)}
          aria-label={room.kind === "DIRECT" ? undefined : room.name}
        >
          {room.kind === "DIRECT" ? <DirectName room={room} me={meId} /> : room.name}
          {room.kind === "PRIVATE" && <span className="kind" title="private: members only"> 🔒</span>}
          {unread > 0 && (
            <span className="badge" data-testid={`unread-${room.id}`}>
              {unread}
            </span>
          )}
          {last && last.body && (
            <small className="preview" data-testid="preview">
              {last.sender.name}: {last.body}
            </small>
          )}
        </button>
      </li>
    );
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
        <label className="setting">
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
        <h3>Rooms</h3>
        <ul data-testid="rooms">{listed.filter((room) => room.kind !== "DIRECT").map(item)}</ul>
        <button className={`link ${directory ? "active" : ""}`} onClick={() => setDirectory(true)} data-testid="open-directory">
          Browse public rooms
        </button>
        <h3>Direct messages</h3>
        <ul data-testid="directs">{listed.filter((room) => room.kind === "DIRECT").map(item)}</ul>
        {next !== null && (
          <button className="link" onClick={() => readMore().catch((failure: Error) => setError(failure.message))} data-testid="more-rooms">
            More rooms
          </button>
        )}
        <form
          className="create"
          onSubmit={act(
            async () =>
              (await createRoom({ variables: { name: newName, kind: newKind, topic: newTopic.trim() || null } })).data
                ?.createRoom,
            () => {
              setNewName("");
              setNewTopic("");
              setNewKind("PRIVATE"); // back to the safe default for the next room
            },
          )}
        >
          <input placeholder="New room" value={newName} onChange={(e) => setNewName(e.target.value)} data-testid="new-room" />
          <input
            placeholder="Topic (optional)"
            value={newTopic}
            onChange={(e) => setNewTopic(e.target.value)}
            data-testid="new-room-topic"
          />
          <span className="row">
            <select value={newKind} onChange={(e) => setNewKind(e.target.value as RoomKind)} data-testid="new-room-kind">
              <option value="PRIVATE">Private: members and invitees</option>
              <option value="PUBLIC">Public: anyone can find and join</option>
            </select>
            <button type="submit" data-testid="create-room">Create</button>
          </span>
        </form>
        <form onSubmit={act(async () => (await joinRoom({ variables: { room: joinId.trim() } })).data?.joinRoom, () => setJoinId(""))}>
          <input placeholder="Room id" value={joinId} onChange={(e) => setJoinId(e.target.value)} data-testid="join-id" />
          <button type="submit" data-testid="join-room">Join</button>
        </form>
        {error && <p className="error" data-testid="rooms-error">{error}</p>}
      </aside>
      <main>
        {directory ? (
          <Directory
            onOpen={open}
            onJoined={(room) => {
              put(room);
              open(room.id, true);
            }}
          />
        ) : selected ? (
          <RoomView
            key={`${selected}/${opened}`}
            room={selected}
            me={meId ?? ""}
            chat={chat}
            removed={removed.has(selected)}
            onLeave={(work) => leave(selected, work)}
            onClose={() => open(null)}
            onDirect={direct}
            onJoined={put}
          />
        ) : (
          <p>Pick or create a room.</p>
        )}
      </main>
    </div>
  );
}

/** A DIRECT room is named after the other people in it (fixed for good: read once, then cached). */
function DirectName({ room, me }: { room: ListedRoomFragment; me: string | undefined }) {
  const people = useQuery(DirectPeopleDocument, { variables: { id: room.id } });
  const others = people.data?.room?.members.filter((person) => person.id !== me) ?? [];
  return <span data-testid="direct-name">{others.length ? others.map((person) => person.name).join(", ") : room.name}</span>;
}
