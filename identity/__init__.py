"""Who is asking: passwords and tokens, the viewer behind a request, the viewer cache, the
revocations that every process hears, and the avatars we draw."""
