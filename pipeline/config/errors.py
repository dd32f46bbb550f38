"""Config errors as one line per problem: field path, bad value, what is allowed."""

from __future__ import annotations

from typing import Any


class ConfigError(Exception):
    """A config problem the user must fix; ``problems`` holds one line each."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


def format_error(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if not loc:  # whole-config checks name their fields themselves
        return msg
    if err["type"] == "missing":
        return f"{loc}: required field is missing"
    if err["type"] == "extra_forbidden":
        return f"{loc}: unknown key (value {err['input']!r}); remove it or fix its spelling"
    return f"{loc}: bad value {err['input']!r}: {msg}"
