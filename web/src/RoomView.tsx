import { useCallback, useEffect, useRef, useState, type FormEvent } from "react";
import { useApolloClient } from "@apollo/client/react";

import type { Chat } from "./apollo";
import { Avatar } from "./Avatar";
import {
  DeleteMessageDocument,
  EditMessageDocument,
  LeaveRoomDocument,
  MarkReadDocument,
  ReactDocument,
  RoomEventsDocument,
  RoomHistoryDocument,
  SendMessageDocument,
  SendTypingDocument,
  UnreactDocument,
  WhoIsOnlineDocument,
  WhoTypesDocument,
  type LineFragment,
  type PersonFragment,
  type RoomEventsSubscription,
  type RoomHistoryQuery,
} from "./generated/graphql";

const PAGE = 30;
const TYPING_EVERY = 3000; // ms between heartbeats while typing (the server forgets after 6 s)
const QUICK_REACTIONS = ["👍", "❤️", "😂", "🎉"];

type RoomEvent = RoomEventsSubscription["roomEvents"];
/** A join or a leave, shown after the message that preceded it. */
interface Notice {
  cursor: string;
  afterSeq: number;
  text: string;
}

/** History pages newest first; everything that happens next arrives by the room's event log
 * (`roomEvents`), from the cursor the history was read at: messages, edits, deletes, reactions,
 * joins and leaves. After every reconnection the subscription starts again after the last event
 * seen, so nothing is missed; messages are kept by their sequence number and notices by their
 * cursor, so nothing shows twice. What was shown is marked read. Typing and presence are
 * subscriptions of their own. */
export function RoomView({ room, me, chat, onLeft }: { room: string; me: string; chat: Chat; onLeft: () => void }) {
  const client = useApolloClient();
  const [info, setInfo] = useState<NonNullable<RoomHistoryQuery["room"]> | null>(null);
  const [members, setMembers] = useState<PersonFragment[]>([]);
  const [online, setOnline] = useState<Set<string>>(new Set());
  const [typing, setTyping] = useState<PersonFragment[]>([]);
  const [lines, setLines] = useState<Map<number, LineFragment>>(new Map());
  const [notices, setNotices] = useState<Map<string, Notice>>(new Map());
  const [older, setOlder] = useState<string | null>(null);
  const [ready, setReady] = useState(false);
  const [generation, setGeneration] = useState(0);
  const [draft, setDraft] = useState("");
  const [editing, setEditing] = useState<{ id: string; body: string } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const lastSeq = useRef(0);
  const lastCursor = useRef<string | null>(null);
  const lastTyping = useRef(0);

  const add = useCallback((incoming: LineFragment[]) => {
    setLines((current) => {
      const next = new Map(current);
      for (const line of incoming) {
        next.set(line.seq, line);
        lastSeq.current = Math.max(lastSeq.current, line.seq);
      }
      return next;
    });
  }, []);

  const notice = useCallback((cursor: string, text: string) => {
    setNotices((current) => new Map(current).set(cursor, current.get(cursor) ?? { cursor, afterSeq: lastSeq.current, text }));
  }, []);

  const page = useCallback(
    async (after: string | null) => {
      const { data } = await client.query({
        query: RoomHistoryDocument,
        variables: { id: room, first: PAGE, after },
        fetchPolicy: "network-only",
      });
      if (!data?.room) return;
      setInfo(data.room);
      if (after === null) {
        setMembers(data.room.members);
        lastCursor.current ??= data.room.latestEventCursor ?? null;
      }
      add(data.room.messages.edges.map((edge) => edge.node));
      setOlder(data.room.messages.pageInfo.hasNextPage ? (data.room.messages.pageInfo.endCursor ?? null) : null);
    },
    [client, room, add],
  );

  useEffect(() => {
    page(null).then(() => setReady(true), (failure: Error) => setError(failure.message));
  }, [page]);

  // Whatever this page shows is read: the read position follows the last event seen, a second
  // after it arrived (the room list's badge clears on every device, by the ReadUpTo event).
  const [toRead, setToRead] = useState<string | null>(null);
  useEffect(() => {
    if (!ready || !lastCursor.current) return;
    const timer = setTimeout(() => {
      if (document.visibilityState === "visible" && lastCursor.current) {
        client.mutate({ mutation: MarkReadDocument, variables: { room, upTo: lastCursor.current } }).catch(() => undefined);
      }
    }, 1000);
    return () => clearTimeout(timer);
  }, [client, room, ready, toRead]);

  const apply = useCallback(
    (event: RoomEvent) => {
      lastCursor.current = event.cursor;
      switch (event.__typename) {
        case "MessageCreated":
        case "MessageEdited":
        case "ReactionChanged":
          add([event.message]);
          if (event.__typename !== "ReactionChanged") setToRead(event.cursor);
          break;
        case "MessageDeleted":
          setLines((current) => {
            const next = new Map(current);
            for (const [seq, line] of next) {
              if (line.id === event.messageId) next.set(seq, { ...line, body: "", deleted: true, reactions: [] });
            }
            return next;
          });
          break;
        case "MemberJoined": {
          const { user } = event;
          setMembers((current) => (current.some((member) => member.id === user.id) ? current : [...current, user]));
          notice(event.cursor, `${user.name} joined`);
          break;
        }
        case "MemberLeft": {
          const { user } = event;
          setMembers((current) => current.filter((member) => member.id !== user.id));
          notice(event.cursor, `${user.name} left`);
          break;
        }
      }
    },
    [add, notice],
  );

  useEffect(() => chat.onState((_, reconnected) => reconnected && setGeneration((g) => g + 1)), [chat]);

  useEffect(() => {
    if (!ready) return;
    const subscriptions = [
      client.subscribe({ query: RoomEventsDocument, variables: { room, after: lastCursor.current } }).subscribe({
        next: (result) => {
          if (result.data) apply(result.data.roomEvents);
          if (result.error) setError(result.error.message);
        },
        error: (failure: Error) => setError(failure.message),
      }),
      client.subscribe({ query: WhoTypesDocument, variables: { room } }).subscribe({
        next: (result) => result.data && setTyping(result.data.typing.users.filter((user) => user.id !== me)),
      }),
      client.subscribe({ query: WhoIsOnlineDocument, variables: { room } }).subscribe({
        next: (result) => result.data && setOnline(new Set(result.data.presence.online.map((user) => user.id))),
      }),
    ];
    return () => subscriptions.forEach((subscription) => subscription.unsubscribe());
  }, [client, room, me, ready, generation, apply]);

  const act = async (work: () => Promise<unknown>) => {
    try {
      await work();
    } catch (failure) {
      setError(failure instanceof Error ? failure.message : String(failure));
    }
  };

  const send = (event: FormEvent) => {
    event.preventDefault();
    if (!draft.trim()) return;
    void act(async () => {
      await client.mutate({ mutation: SendMessageDocument, variables: { room, body: draft } });
      setDraft("");
      lastTyping.current = 0;
    });
  };

  const typed = (value: string) => {
    setDraft(value);
    if (value.trim() && Date.now() - lastTyping.current > TYPING_EVERY) {
      lastTyping.current = Date.now();
      client.mutate({ mutation: SendTypingDocument, variables: { room } }).catch(() => undefined);
    }
  };

  const saveEdit = (event: FormEvent) => {
    event.preventDefault();
    if (!editing) return;
    void act(async () => {
      await client.mutate({ mutation: EditMessageDocument, variables: { id: editing.id, body: editing.body } });
      setEditing(null);
    });
  };

  const toggle = (line: LineFragment, emoji: string) => {
    const mine = line.reactions.some((reaction) => reaction.emoji === emoji && reaction.mine);
    void act(() =>
      client.mutate({ mutation: mine ? UnreactDocument : ReactDocument, variables: { message: line.id, emoji } }),
    );
  };

  const leave = () =>
    void act(async () => {
      await client.mutate({ mutation: LeaveRoomDocument, variables: { room } });
      onLeft();
    });

  const timeline = [
    ...[...lines.values()].map((line) => ({ key: `m${line.seq}`, order: [line.seq, 0], line, notice: null })),
    ...[...notices.values()].map((item) => ({ key: item.cursor, order: [item.afterSeq, 1], line: null, notice: item })),
  ].sort((a, b) => a.order[0] - b.order[0] || a.order[1] - b.order[1]);
  return (
    <section className="room">
      <h2 data-testid="room-name">
        {info?.name} <small data-testid="room-id">#{room}</small>
        <button className="link leave" onClick={leave} data-testid="leave-room">
          Leave
        </button>
      </h2>
      <p className="members" data-testid="members">
        {members.map((member, index) => (
          <span key={member.id} className={online.has(member.id) ? "online" : ""} data-online={online.has(member.id)}>
            {index > 0 && ", "}
            {member.name}
          </span>
        ))}
      </p>
      {older && (
        <button className="link" onClick={() => page(older)} data-testid="older">
          Load older messages
        </button>
      )}
      <ol data-testid="messages">
        {timeline.map(({ key, line, notice: item }) =>
          line ? (
            <li key={key} data-seq={line.seq} className={line.deleted ? "deleted" : ""}>
              <Avatar person={line.sender} />
              <b>{line.sender.name}</b>{" "}
              {editing?.id === line.id ? (
                <form onSubmit={saveEdit} className="edit">
                  <input
                    value={editing.body}
                    onChange={(e) => setEditing({ id: line.id, body: e.target.value })}
                    data-testid="edit-body"
                  />
                  <button type="submit" data-testid="save-edit">Save</button>
                  <button type="button" className="link" onClick={() => setEditing(null)}>Cancel</button>
                </form>
              ) : (
                <span className="body">{line.deleted ? "message deleted" : line.body}</span>
              )}
              {line.editedAt && !line.deleted && <small className="edited">(edited)</small>}
              <span className="reactions">
                {line.reactions.map((reaction) => (
                  <button
                    key={reaction.emoji}
                    className={`reaction ${reaction.mine ? "mine" : ""}`}
                    onClick={() => toggle(line, reaction.emoji)}
                    data-testid="reaction"
                  >
                    {reaction.emoji} {reaction.count}
                  </button>
                ))}
                {!line.deleted &&
                  QUICK_REACTIONS.filter((emoji) => !line.reactions.some((reaction) => reaction.emoji === emoji)).map(
                    (emoji) => (
                      <button key={emoji} className="link add-reaction" onClick={() => toggle(line, emoji)} data-testid={`react-${emoji}`}>
                        {emoji}
                      </button>
                    ),
                  )}
              </span>
              {line.sender.id === me && !line.deleted && editing?.id !== line.id && (
                <span className="own">
                  <button className="link" onClick={() => setEditing({ id: line.id, body: line.body })} data-testid="edit">
                    edit
                  </button>
                  <button
                    className="link"
                    onClick={() => void act(() => client.mutate({ mutation: DeleteMessageDocument, variables: { id: line.id } }))}
                    data-testid="delete"
                  >
                    delete
                  </button>
                </span>
              )}
              <time>{new Date(line.createdAt).toLocaleTimeString()}</time>
            </li>
          ) : (
            <li key={key} className="notice" data-testid="notice">
              {item?.text}
            </li>
          ),
        )}
      </ol>
      <p className="typing" data-testid="typing">
        {typing.length > 0 && `${typing.map((user) => user.name).join(", ")} ${typing.length > 1 ? "are" : "is"} typing…`}
      </p>
      <form onSubmit={send}>
        <input placeholder="Message" value={draft} onChange={(e) => typed(e.target.value)} data-testid="draft" />
        <button type="submit" data-testid="send">Send</button>
      </form>
      {error && <p className="error" data-testid="room-error">{error}</p>}
    </section>
  );
}
