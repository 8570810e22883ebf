"""Pure parsing of what senders post: no Flask, no Redis, no network."""
