"""Results on disk: per-request JSONL written as requests finish, run JSON written atomically."""
