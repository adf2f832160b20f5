import { useCallback, useEffect, useRef, useState, type FormEvent } from "react";
import { useApolloClient } from "@apollo/client/react";

import type { Chat } from "./apollo";
import {
  MessageCreatedDocument,
  RoomHistoryDocument,
  SendMessageDocument,
  type LineFragment,
  type RoomHistoryQuery,
} from "./generated/graphql";

const PAGE = 30;

/** History pages newest first; live messages arrive by subscription. After every reconnection
 * the subscription starts again with `after` = the last message seen, so nothing is missed;
 * messages are kept by their sequence number, so nothing shows twice. */
export function RoomView({ room, chat }: { room: string; chat: Chat }) {
  const client = useApolloClient();
  const [info, setInfo] = useState<NonNullable<RoomHistoryQuery["room"]> | null>(null);
  const [lines, setLines] = useState<Map<number, LineFragment>>(new Map());
  const [older, setOlder] = useState<string | null>(null);
  const [ready, setReady] = useState(false);
  const [generation, setGeneration] = useState(0);
  const [draft, setDraft] = useState("");
  const [error, setError] = useState<string | null>(null);
  const last = useRef<LineFragment | null>(null);

  const add = useCallback((incoming: LineFragment[]) => {
    setLines((current) => {
      const next = new Map(current);
      for (const line of incoming) {
        next.set(line.seq, line);
        if (!last.current || line.seq > last.current.seq) last.current = line;
      }
      return next;
    });
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
      add(data.room.messages.edges.map((edge) => edge.node));
      setOlder(data.room.messages.pageInfo.hasNextPage ? (data.room.messages.pageInfo.endCursor ?? null) : null);
    },
    [client, room, add],
  );

  useEffect(() => {
    page(null).then(() => setReady(true), (failure: Error) => setError(failure.message));
  }, [page]);

  // Someone who joined after the page loaded speaks: show them among the members.
  const checkedSenders = useRef(new Set<string>());
  useEffect(() => {
    if (!info) return;
    const members = new Set(info.members.map((member) => member.id));
    const unknown = [...lines.values()].map((line) => line.sender.id).filter((id) => !members.has(id));
    if (unknown.every((id) => checkedSenders.current.has(id))) return;
    unknown.forEach((id) => checkedSenders.current.add(id));
    client
      .query({ query: RoomHistoryDocument, variables: { id: room, first: 0 }, fetchPolicy: "network-only" })
      .then(({ data }) => data?.room && setInfo(data.room), () => undefined);
  }, [client, room, info, lines]);

  useEffect(() => chat.onState((_, reconnected) => reconnected && setGeneration((g) => g + 1)), [chat]);

  useEffect(() => {
    if (!ready) return;
    const subscription = client
      .subscribe({ query: MessageCreatedDocument, variables: { room, after: last.current?.id ?? null } })
      .subscribe({
        next: (result) => {
          if (result.data) add([result.data.messageCreated]);
          if (result.error) setError(result.error.message);
        },
        error: (failure: Error) => setError(failure.message),
      });
    return () => subscription.unsubscribe();
  }, [client, room, ready, generation, add]);

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

  const ordered = [...lines.values()].sort((a, b) => a.seq - b.seq);
  return (
    <section className="room">
      <h2 data-testid="room-name">
        {info?.name} <small data-testid="room-id">#{room}</small>
      </h2>
      <p className="members" data-testid="members">{info?.members.map((member) => member.name).join(", ")}</p>
      {older && (
        <button className="link" onClick={() => page(older)} data-testid="older">
          Load older messages
        </button>
      )}
      <ol data-testid="messages">
        {ordered.map((line) => (
          <li key={line.seq} data-seq={line.seq}>
            <img src={line.sender.avatar} alt="" width={32} height={32} />
            <b>{line.sender.name}</b> <span className="body">{line.body}</span>
            <time>{new Date(line.createdAt).toLocaleTimeString()}</time>
          </li>
        ))}
      </ol>
      <form onSubmit={send}>
        <input placeholder="Message" value={draft} onChange={(e) => setDraft(e.target.value)} data-testid="draft" />
        <button type="submit" data-testid="send">Send</button>
      </form>
      {error && <p className="error" data-testid="room-error">{error}</p>}
    </section>
  );
}
