import { useState } from "react";

import type { PersonFragment } from "./generated/graphql";

const COLORS = ["#5b8def", "#e0795a", "#4bab7a", "#a56de2", "#d4a72c", "#4aa3b5"];

/** The user's picture, or their initials on a colour of their own when it does not load
 * (an image the user set that is gone, no network). */
export function Avatar({ person, size = 32 }: { person: PersonFragment; size?: number }) {
  const [failed, setFailed] = useState(false);
  if (!failed) {
    return <img src={person.avatar} alt="" width={size} height={size} onError={() => setFailed(true)} />;
  }
  const initials = person.name
    .split(/\s+/)
    .filter(Boolean)
    .slice(0, 2)
    .map((word) => word[0]!.toUpperCase())
    .join("");
  const color = COLORS[[...person.id].reduce((sum, c) => sum + c.charCodeAt(0), 0) % COLORS.length];
  return (
    <span className="initials" style={{ width: size, height: size, background: color }} data-testid="initials">
      {initials}
    </span>
  );
}
