"""Why a command was refused (:class:`CommandError`), and profile action templates. Pure.

A command's bytes (text plus a line ending, or hex) are decoded with the message,
in ``protocol``. A profile action is a template such as ``"RATE {value}\\n"``:
``{value}`` is the slider's number, ``{{``/``}}`` are braces.
"""

from __future__ import annotations

import math


class CommandError(Exception):
    """A command that cannot be sent: ``code`` is the wire's error code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render_template(template: str, value: float | None = None) -> bytes:
    """An action's bytes: the template with ``{value}`` filled in (an integer prints without ``.0``)."""
    if value is not None and not math.isfinite(value):
        raise CommandError("bad_field", "an action value must be a finite number")
    try:
        text = template.format(value="" if value is None else _number(value))
    except (KeyError, IndexError, ValueError) as e:
        raise CommandError("bad_field", f"bad action template {template!r}: {e}") from None
    return text.encode("utf-8")
