"""Named API keys with a scope: the record and its secret (record), the compacted topic every api
reads them from (board), and adding or revoking one (registry)."""
