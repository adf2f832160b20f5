import { useCallback, useEffect, useRef, useState, type FormEvent } from "react";
import { useApolloClient } from "@apollo/client/react";

import type { Chat } from "./apollo";
import {
  LeaveRoomDocument,
  RoomEventsDocument,
  RoomHistoryDocument,
  SendMessageDocument,
  type LineFragment,
  type PersonFragment,
  type RoomEventsSubscription,
  type RoomHistoryQuery,
} from "./generated/graphql";

const PAGE = 30;

type RoomEvent = RoomEventsSubscription["roomEvents"];
/** A join or a leave, shown after the message that preceded it. */
interface Notice {
  cursor: string;
  afterSeq: number;
  text: string;
}

/** History pages newest first; everything that happens next arrives by the room's event log
 * (`roomEvents`), from the cursor the history was read at. After every reconnection the
 * subscription starts again after the last event seen, so nothing is missed; messages are kept
 * by their sequence number and notices by their cursor, so nothing shows twice. */
export function RoomView({ room, chat, onLeft }: { room: string; chat: Chat; onLeft: () => void }) {
  const client = useApolloClient();
  const [info, setInfo] = useState<NonNullable<RoomHistoryQuery["room"]> | null>(null);
  const [members, setMembers] = useState<PersonFragment[]>([]);
  const [lines, setLines] = useState<Map<number, LineFragment>>(new Map());
  const [notices, setNotices] = useState<Map<string, Notice>>(new Map());
  const [older, setOlder] = useState<string | null>(null);
  const [ready, setReady] = useState(false);
  const [generation, setGeneration] = useState(0);
  const [draft, setDraft] = useState("");
  const [error, setError] = useState<string | null>(null);
  const lastSeq = useRef(0);
  const lastCursor = useRef<string | null>(null);

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

  const apply = useCallback(
    (event: RoomEvent) => {
      lastCursor.current = event.cursor;
      if (event.__typename === "MessageCreated") {
        add([event.message]);
      } else if (event.__typename === "MemberJoined") {
        const { user } = event;
        setMembers((current) => (current.some((member) => member.id === user.id) ? current : [...current, user]));
        notice(event.cursor, `${user.name} joined`);
      } else if (event.__typename === "MemberLeft") {
        const { user } = event;
        setMembers((current) => current.filter((member) => member.id !== user.id));
        notice(event.cursor, `${user.name} left`);
      }
    },
    [add, notice],
  );

  useEffect(() => chat.onState((_, reconnected) => reconnected && setGeneration((g) => g + 1)), [chat]);

  useEffect(() => {
    if (!ready) return;
    const subscription = client
      .subscribe({ query: RoomEventsDocument, variables: { room, after: lastCursor.current } })
      .subscribe({
        next: (result) => {
          if (result.data) apply(result.data.roomEvents);
          if (result.error) setError(result.error.message);
        },
        error: (failure: Error) => setError(failure.message),
      });
    return () => subscription.unsubscribe();
  }, [client, room, ready, generation, apply]);

  const send = async (event: FormEvent) => {
    event.preventDefault();
    if (!draft.trim()) return;
    try {
      await client.mutate({ mutation: SendMessageDocument, variables: { room, body: draft } });
      setDraft("");
    } catch (failure) {
      setError(failure instanceof Error ? failure.message : String(failure));
    }
  };

  const leave = async () => {
    try {
      await client.mutate({ mutation: LeaveRoomDocument, variables: { room } });
      onLeft();
    } catch (failure) {
      setError(failure instanceof Error ? failure.message : String(failure));
    }
  };

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
      <p className="members" data-testid="members">{members.map((member) => member.name).join(", ")}</p>
      {older && (
        <button className="link" onClick={() => page(older)} data-testid="older">
          Load older messages
        </button>
      )}
      <ol data-testid="messages">
        {timeline.map(({ key, line, notice: item }) =>
          line ? (
            <li key={key} data-seq={line.seq}>
              <img src={line.sender.avatar} alt="" width={32} height={32} />
              <b>{line.sender.name}</b> <span className="body">{line.body}</span>
              <time>{new Date(line.createdAt).toLocaleTimeString()}</time>
            </li>
          ) : (
            <li key={key} className="notice" data-testid="notice">
              {item?.text}
            </li>
          ),
        )}
      </ol>
      <form onSubmit={send}>
        <input placeholder="Message" value={draft} onChange={(e) => setDraft(e.target.value)} data-testid="draft" />
        <button type="submit" data-testid="send">Send</button>
      </form>
      {error && <p className="error" data-testid="room-error">{error}</p>}
    </section>
  );
}
