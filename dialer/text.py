"""Text from outside (a CSV file, a database row, a configuration value) made safe to
print: terminal control characters escaped, and Rich markup taken literally."""

from __future__ import annotations

import re

from rich.markup import escape

# What a terminal acts on or that reorders what it shows: C0/C1 controls (escape
# sequences, carriage returns, line breaks), line and paragraph separators, and the
# bidirectional marks, embeddings, overrides and isolates.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` with every character a terminal would act on written as a Python escape
    (`\\x1b`, `\\u202e`, `\\n`), so a message shows what the data holds, on one line."""
    return _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def markup_safe(text: str) -> str:
    """`text` to put inside a Rich markup string: printable, and its brackets escaped
    so `[red]` or `[/nope]` in a campaign name is shown, never interpreted."""
    return escape(printable(text))
