// The address: which room is open, and an invite to join.

/** Where the address points: `#/room/<id>` opens a room, `#/invite/<code>` (or `?invite=<code>`)
 * joins the room of an invite. Ids and codes are opaque strings. */
export type Route = { room: string | null; invite: string | null };

export function readRoute(): Route {
  const hash = location.hash.replace(/^#\/?/, "");
  const [kind, value] = hash.split("/", 2).map((part) => {
    try {
      return decodeURIComponent(part);
    } catch {
      return ""; // a mangled address opens nothing
    }
  });
  const query = new URLSearchParams(location.search).get("invite");
  return {
    room: kind === "room" && value ? value : null,
    invite: kind === "invite" && value ? value : query || null,
  };
}

/** Puts the open room (or nothing) in the address, without a history entry per click. */
export function showRoute(room: string | null) {
  const url = `${location.pathname}${room ? `#/room/${encodeURIComponent(room)}` : ""}`;
  if (`${location.pathname}${location.search}${location.hash}` !== url) history.replaceState(null, "", url);
}
