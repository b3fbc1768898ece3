"""The language: text -> IR (parse) -> cell graph (resolve, dimensions) -> diagnostics (check),
and the tools over it (fmt, diff, show, stats)."""
