import { useCallback, useEffect, useRef, useState, type FormEvent } from "react";
import { useApolloClient } from "@apollo/client/react";
import { CombinedGraphQLErrors } from "@apollo/client/errors";

import type { Chat } from "./apollo";
import { Avatar } from "./Avatar";
import {
  CreateInviteDocument,
  DeleteMessageDocument,
  EditMessageDocument,
  JoinRoomDocument,
  LeaveRoomDocument,
  MarkReadDocument,
  MuteMemberDocument,
  RemoveMemberDocument,
  SetRoleDocument,
  UpdateRoomDocument,
  ReactDocument,
  RoomEventsDocument,
  RoomHistoryDocument,
  SendMessageDocument,
  SendTypingDocument,
  UnreactDocument,
  WhoIsOnlineDocument,
  WhoTypesDocument,
  type LineFragment,
  type ListedRoomFragment,
  type PersonFragment,
  type Role,
  type RoomKind,
  type RoomEventsSubscription,
  type RoomHistoryQuery,
} from "./generated/graphql";

const PAGE = 30;
const TYPING_EVERY = 3000; // ms between heartbeats while typing (the server forgets after 6 s)
const QUICK_REACTIONS = ["👍", "❤️", "😂", "🎉"];

type RoomEvent = RoomEventsSubscription["roomEvents"];
type Member = { role: Role; user: PersonFragment };
const ROLE_NAMES: Record<Role, string> = { OWNER: "owner", MODERATOR: "moderator", MEMBER: "member" };
const A_ROLE: Record<Role, string> = { OWNER: "an owner", MODERATOR: "a moderator", MEMBER: "a member" };

/** The `extensions.code` of a GraphQL error (NOT_FOUND, FORBIDDEN...), if it is one. */
function codeOf(failure: unknown): string | undefined {
  if (!CombinedGraphQLErrors.is(failure)) return undefined;
  const code = failure.errors[0]?.extensions?.code;
  return typeof code === "string" ? code : undefined;
}
/** What the page says of a failure; a mute says until when (its `extensions.until`). */
function message(failure: unknown): string {
  const text = failure instanceof Error ? failure.message : String(failure);
  const until = CombinedGraphQLErrors.is(failure) ? failure.errors[0]?.extensions?.until : undefined;
  return typeof until === "string" ? `${text} (until ${new Date(until).toLocaleString()})` : text;
}
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
 * cursor, so nothing shows twice. What was shown is marked read (and, when the page moves to
 * another room, what was shown since the last read). Typing and presence are subscriptions of
 * their own.
 *
 * Members are listed with their roles; what the viewer may do to one follows the server's rules
 * (an OWNER anything to anyone else; a MODERATOR remove, ban and mute MEMBERs; nobody anything
 * in a DIRECT room). When the viewer is removed (`removed`: the room list heard it; or the
 * server ended the room's subscription), the view ends at once and says so. */
export function RoomView({
  room,
  me,
  chat,
  removed,
  onLeave,
  onClose,
  onDirect,
  onJoined,
}: {
  room: string;
  me: string;
  chat: Chat;
  removed: boolean;
  onLeave: (work: () => Promise<unknown>) => Promise<void>;
  onClose: () => void;
  onDirect: (user: string) => Promise<void>;
  onJoined: (room: ListedRoomFragment) => void;
}) {
  const client = useApolloClient();
  const [info, setInfo] = useState<NonNullable<RoomHistoryQuery["room"]> | null>(null);
  const [members, setMembers] = useState<Member[]>([]);
  const [myRole, setMyRole] = useState<Role | null>(null);
  const [failure, setFailure] = useState<"not-found" | "outside" | null>(null);
  const [kicked, setKicked] = useState(false);
  const ended = removed || kicked;
  const [chosen, setChosen] = useState<string | null>(null);
  const [invite, setInvite] = useState<string | null>(null);
  const [settings, setSettings] = useState<{ name: string; topic: string; kind: RoomKind } | null>(null);
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
        setMembers(data.room.memberships);
        setMyRole(data.room.myRole ?? null);
        lastCursor.current ??= data.room.latestEventCursor ?? null;
      }
      add(data.room.messages.edges.map((edge) => edge.node));
      setOlder(data.room.messages.pageInfo.hasNextPage ? (data.room.messages.pageInfo.endCursor ?? null) : null);
    },
    [client, room, add],
  );

  const [loads, setLoads] = useState(0);
  useEffect(() => {
    page(null).then(
      () => setReady(true),
      (refused: unknown) => {
        const code = codeOf(refused);
        // Another person's PRIVATE or DIRECT room answers exactly as one that does not exist.
        if (code === "NOT_FOUND" || code === "BAD_USER_INPUT") setFailure("not-found");
        else if (code === "FORBIDDEN") setFailure("outside"); // a PUBLIC room I am not in
        else setError(message(refused));
      },
    );
  }, [page, loads]);

  // Whatever this page shows is read: the read position follows the last event seen, a second
  // after it arrived (the room list's badge clears on every device, by the ReadUpTo event).
  const [toRead, setToRead] = useState<string | null>(null);
  const marked = useRef<string | null>(null);
  const endedRef = useRef(ended);
  endedRef.current = ended;
  const markRead = useCallback(() => {
    const upTo = lastCursor.current;
    if (!upTo || upTo === marked.current || endedRef.current) return;
    marked.current = upTo;
    client.mutate({ mutation: MarkReadDocument, variables: { room, upTo } }).catch(() => undefined);
  }, [client, room]);
  useEffect(() => {
    if (!ready || !lastCursor.current) return;
    const timer = setTimeout(() => {
      if (document.visibilityState === "visible") markRead();
    }, 1000);
    return () => clearTimeout(timer);
  }, [ready, toRead, markRead]);
  const readyRef = useRef(ready);
  readyRef.current = ready;
  useEffect(() => () => void (readyRef.current && markRead()), [markRead]); // moving to another room

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
          setMembers((current) =>
            current.some((member) => member.user.id === user.id) ? current : [...current, { role: "MEMBER", user }],
          );
          notice(event.cursor, event.by ? `${user.name} was added by ${event.by.name}` : `${user.name} joined`);
          break;
        }
        case "MemberLeft":
        case "MemberRemoved": {
          const { user } = event;
          setMembers((current) => current.filter((member) => member.user.id !== user.id));
          if (event.__typename === "MemberLeft") notice(event.cursor, `${user.name} left`);
          else notice(event.cursor, `${user.name} was ${event.banned ? "banned" : "removed"} by ${event.remover.name}`);
          if (user.id === me && event.__typename === "MemberRemoved") setKicked(true);
          break;
        }
        case "RoleChanged": {
          const { user, role } = event;
          setMembers((current) => current.map((member) => (member.user.id === user.id ? { ...member, role } : member)));
          if (user.id === me) setMyRole(role);
          notice(event.cursor, `${user.name} is now ${A_ROLE[role]}`);
          break;
        }
        case "RoomUpdated": {
          const { name, topic, kind } = event;
          setInfo((current) => current && { ...current, name, topic, kind });
          notice(event.cursor, `The room is now “${name}”${topic ? `: ${topic}` : ""} (${kind.toLowerCase()})`);
          break;
        }
      }
    },
    [add, notice, me],
  );

  useEffect(() => chat.onState((_, reconnected) => reconnected && setGeneration((g) => g + 1)), [chat]);

  useEffect(() => {
    if (!ready || ended) return;
    // The server ends the log's subscription when I may no longer see the room (removed, banned).
    const refused = (failure: unknown) => {
      const code = codeOf(failure);
      if (code === "FORBIDDEN" || code === "NOT_FOUND") setKicked(true);
      else setError(message(failure));
    };
    const subscriptions = [
      client.subscribe({ query: RoomEventsDocument, variables: { room, after: lastCursor.current } }).subscribe({
        next: (result) => {
          if (result.data) apply(result.data.roomEvents);
          if (result.error) refused(result.error);
        },
        error: refused,
      }),
      // (These end with the log's subscription when I am removed: the log's error says so.)
      client.subscribe({ query: WhoTypesDocument, variables: { room } }).subscribe({
        next: (result) => result.data && setTyping(result.data.typing.users.filter((user) => user.id !== me)),
        error: () => undefined,
      }),
      client.subscribe({ query: WhoIsOnlineDocument, variables: { room } }).subscribe({
        next: (result) => result.data && setOnline(new Set(result.data.presence.online.map((user) => user.id))),
        error: () => undefined,
      }),
    ];
    return () => subscriptions.forEach((subscription) => subscription.unsubscribe());
  }, [client, room, me, ready, ended, generation, apply]);

  const act = async (work: () => Promise<unknown>) => {
    setError(null);
    try {
      await work();
    } catch (failure) {
      setError(message(failure));
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
    void act(() =>
      onLeave(() => {
        endedRef.current = true; // nothing more to mark read here (a failed leave renders it back)
        return client.mutate({ mutation: LeaveRoomDocument, variables: { room } });
      }),
    );

  const kind = info?.kind;
  const direct = kind === "DIRECT";
  const moderator = !direct && (myRole === "OWNER" || myRole === "MODERATOR");
  /** May I remove, ban or mute this member? (OWNER: anyone else; MODERATOR: MEMBERs.) */
  const canModerate = (member: Member) =>
    !direct && member.user.id !== me && (myRole === "OWNER" || (myRole === "MODERATOR" && member.role === "MEMBER"));
  const canSetRole = (member: Member) => !direct && member.user.id !== me && myRole === "OWNER";
  const title = direct
    ? members
        .filter((member) => member.user.id !== me)
        .map((member) => member.user.name)
        .join(", ") || info?.name
    : info?.name;
  const chosenMember = members.find((member) => member.user.id === chosen) ?? null;
  const moderate = (work: () => Promise<unknown>) => void act(work);

  const saveSettings = (event: FormEvent) => {
    event.preventDefault();
    if (!settings) return;
    void act(async () => {
      await client.mutate({ mutation: UpdateRoomDocument, variables: { room, ...settings, topic: settings.topic.trim() } });
      setSettings(null); // the room's log brings the change (RoomUpdated), to every page
    });
  };

  const makeInvite = () =>
    void act(async () => {
      const { data } = await client.mutate({ mutation: CreateInviteDocument, variables: { room } });
      if (data) setInvite(`${location.origin}${location.pathname}#/invite/${encodeURIComponent(data.createInvite.code)}`);
    });

  if (failure) {
    return (
      <section className="room">
        {failure === "not-found" ? (
          <p className="ended" data-testid="room-not-found">
            Room not found: it does not exist, or it is private and you are not in it.
          </p>
        ) : (
          <p className="ended" data-testid="room-outside">
            You are not a member of this public room.{" "}
            <button
              onClick={() =>
                void act(async () => {
                  const { data } = await client.mutate({ mutation: JoinRoomDocument, variables: { room } });
                  if (data) onJoined(data.joinRoom);
                  setFailure(null);
                  setLoads((n) => n + 1);
                })
              }
              data-testid="room-join"
            >
              Join
            </button>
          </p>
        )}
        <button className="link" onClick={onClose}>
          Close
        </button>
        {error && <p className="error" data-testid="room-error">{error}</p>}
      </section>
    );
  }

  const timeline = [
    ...[...lines.values()].map((line) => ({ key: `m${line.seq}`, order: [line.seq, 0], line, notice: null })),
    ...[...notices.values()].map((item) => ({ key: item.cursor, order: [item.afterSeq, 1], line: null, notice: item })),
  ].sort((a, b) => a.order[0] - b.order[0] || a.order[1] - b.order[1]);
  return (
    <section className="room">
      <h2 data-testid="room-name" data-kind={kind}>
        {title} <small data-testid="room-id">#{room}</small>
        {kind && (
          <span className="kind" data-testid="room-kind">
            {direct ? "direct message" : kind === "PRIVATE" ? "🔒 private" : "public"}
          </span>
        )}
        {moderator && !ended && info && (
          <>
            <button
              className="link leave"
              onClick={() => setSettings(settings ? null : { name: info.name, topic: info.topic ?? "", kind: info.kind })}
              data-testid="edit-room"
            >
              Edit
            </button>
            <button className="link leave" onClick={makeInvite} data-testid="create-invite">
              Invite link
            </button>
          </>
        )}
        {!direct && !ended && (
          <button className="link leave" onClick={leave} data-testid="leave-room">
            Leave
          </button>
        )}
      </h2>
      {settings && (
        <form className="settings" onSubmit={saveSettings} data-testid="room-settings">
          <input value={settings.name} onChange={(e) => setSettings({ ...settings, name: e.target.value })} data-testid="room-settings-name" />
          <input
            placeholder="Topic (empty: none)"
            value={settings.topic}
            onChange={(e) => setSettings({ ...settings, topic: e.target.value })}
            data-testid="room-settings-topic"
          />
          <select
            value={settings.kind}
            onChange={(e) => setSettings({ ...settings, kind: e.target.value as RoomKind })}
            data-testid="room-settings-kind"
          >
            <option value="PRIVATE">Private</option>
            <option value="PUBLIC">Public</option>
          </select>
          <button type="submit" data-testid="room-settings-save">Save</button>
          <button type="button" className="link" onClick={() => setSettings(null)}>
            Cancel
          </button>
        </form>
      )}
      {info?.topic && (
        <p className="topic" data-testid="room-topic">
          {info.topic}
        </p>
      )}
      {invite && (
        <p className="invite">
          Anyone with this link can join (share it with care):{" "}
          <input readOnly value={invite} onFocus={(e) => e.target.select()} data-testid="invite-link" />
          <button className="link" onClick={() => setInvite(null)}>
            hide
          </button>
        </p>
      )}
      <p className="members" data-testid="members">
        {members.filter((member) => !(ended && member.user.id === me)).map((member, index) => (
          <span
            key={member.user.id}
            className={online.has(member.user.id) ? "online" : ""}
            data-online={online.has(member.user.id)}
          >
            {index > 0 && ", "}
            <button
              className={`link member role-${member.role}`}
              onClick={() => setChosen(chosen === member.user.id ? null : member.user.id)}
              data-member={member.user.id}
              data-role={member.role}
              title={ROLE_NAMES[member.role]}
            >
              {member.user.name}
            </button>
          </span>
        ))}
      </p>
      {chosenMember && (
        <div className="member-card" data-testid="member-card" data-member={chosenMember.user.id}>
          <Avatar person={chosenMember.user} />
          <b>{chosenMember.user.name}</b>
          <span className="role" data-testid="member-role">
            {ROLE_NAMES[chosenMember.role]}
          </span>
          {chosenMember.user.id !== me && (
            <button onClick={() => void act(() => onDirect(chosenMember.user.id))} data-testid="member-message">
              Message
            </button>
          )}
          {!ended && canSetRole(chosenMember) &&
            (["OWNER", "MODERATOR", "MEMBER"] as const)
              .filter((role) => role !== chosenMember.role)
              .map((role) => (
                <button
                  key={role}
                  onClick={() =>
                    moderate(() =>
                      client.mutate({ mutation: SetRoleDocument, variables: { room, user: chosenMember.user.id, role } }),
                    )
                  }
                  data-testid={`member-make-${role.toLowerCase()}`}
                >
                  Make {ROLE_NAMES[role]}
                </button>
              ))}
          {!ended && canModerate(chosenMember) && (
            <>
              <button
                onClick={() =>
                  moderate(() =>
                    client.mutate({ mutation: MuteMemberDocument, variables: { room, user: chosenMember.user.id, minutes: 60 } }),
                  )
                }
                data-testid="member-mute"
              >
                Mute 1 h
              </button>
              <button
                onClick={() =>
                  moderate(() =>
                    client.mutate({ mutation: MuteMemberDocument, variables: { room, user: chosenMember.user.id, minutes: 0 } }),
                  )
                }
                data-testid="member-unmute"
              >
                Unmute
              </button>
              <button
                className="danger"
                onClick={() =>
                  moderate(() => client.mutate({ mutation: RemoveMemberDocument, variables: { room, user: chosenMember.user.id } }))
                }
                data-testid="member-remove"
              >
                Remove
              </button>
              <button
                className="danger"
                onClick={() =>
                  moderate(() =>
                    client.mutate({ mutation: RemoveMemberDocument, variables: { room, user: chosenMember.user.id, ban: true } }),
                  )
                }
                data-testid="member-ban"
              >
                Ban
              </button>
            </>
          )}
          <button className="link" onClick={() => setChosen(null)}>
            close
          </button>
        </div>
      )}
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
                {!line.deleted && !ended &&
                  QUICK_REACTIONS.filter((emoji) => !line.reactions.some((reaction) => reaction.emoji === emoji)).map(
                    (emoji) => (
                      <button key={emoji} className="link add-reaction" onClick={() => toggle(line, emoji)} data-testid={`react-${emoji}`}>
                        {emoji}
                      </button>
                    ),
                  )}
              </span>
              {line.sender.id === me && !line.deleted && !ended && editing?.id !== line.id && (
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
      {ended ? (
        <p className="ended" data-testid="room-ended">
          You were removed from this room (or left it on another device): you no longer see what happens in it.{" "}
          <button className="link" onClick={onClose}>
            Close
          </button>
        </p>
      ) : (
        <>
          <p className="typing" data-testid="typing">
            {typing.length > 0 && `${typing.map((user) => user.name).join(", ")} ${typing.length > 1 ? "are" : "is"} typing…`}
          </p>
          <form onSubmit={send}>
            <input placeholder="Message" value={draft} onChange={(e) => typed(e.target.value)} data-testid="draft" />
            <button type="submit" data-testid="send">Send</button>
          </form>
        </>
      )}
      {error && <p className="error" data-testid="room-error">{error}</p>}
    </section>
  );
}
