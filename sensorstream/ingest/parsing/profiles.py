"""Device profiles (the parsed TOML, see docs/devices.md) -> the parser they describe."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .binary import BinaryRecordParser
from .channels import MAX_CHANNELS
from .lines import MAX_LINE, LineParser

_FORMAT_KEYS = {
    "kind", "timestamp_field", "timestamp_unit", "struct", "fields", "columns",
    "max_line", "max_channels", "discard_first_partial",
}  # fmt: skip
_CHANNEL_KEYS = {"name", "unit", "scale", "offset"}


def make_parser(profile: Mapping[str, Any]) -> LineParser | BinaryRecordParser:
    """Build the parser a device profile (the parsed TOML, see docs/devices.md) describes.

    Raises ValueError for a profile it cannot honour (an unknown key, kind or unit).
    """
    fmt = dict(profile.get("format", {}))
    unknown = set(fmt) - _FORMAT_KEYS
    if unknown:
        raise ValueError(f"unknown [format] keys: {sorted(unknown)}")
    channels = list(profile.get("channels", []))
    for ch in channels:
        extra = set(ch) - _CHANNEL_KEYS
        if extra or "name" not in ch:
            raise ValueError(f"[[channels]] entries need a name and take only {sorted(_CHANNEL_KEYS)}: {ch}")
    scale = {str(ch["name"]): float(ch["scale"]) for ch in channels if "scale" in ch}
    offset = {str(ch["name"]): float(ch["offset"]) for ch in channels if "offset" in ch}
    kind = fmt.get("kind", "auto")
    common: dict[str, Any] = {
        "timestamp_field": fmt.get("timestamp_field"),
        "discard_first_partial": bool(fmt.get("discard_first_partial", True)),
        "scale": scale or None,
        "offset": offset or None,
    }
    if kind == "cobs":
        if "struct" not in fmt:
            raise ValueError("[format] kind = 'cobs' needs struct = '<...'")
        return BinaryRecordParser(
            fmt["struct"],
            fmt.get("fields"),
            timestamp_unit=fmt.get("timestamp_unit", "us"),
            max_frame=fmt.get("max_line"),
            **common,
        )
    for key in ("struct", "fields"):
        if key in fmt:
            raise ValueError(f"[format] {key} only applies to kind = 'cobs'")
    names = fmt.get("columns") if kind == "csv" or "columns" in fmt else None
    if names is None:
        names = [str(ch["name"]) for ch in channels]
    return LineParser(
        kind,
        channel_names=names,
        timestamp_unit=fmt.get("timestamp_unit", "s"),
        max_line=int(fmt.get("max_line", MAX_LINE)),
        max_channels=int(fmt.get("max_channels", MAX_CHANNELS)),
        **common,
    )


def profile_units(profile: Mapping[str, Any]) -> dict[str, str]:
    """Channel name -> unit, from a profile's ``[[channels]]`` (channels not listed have none)."""
    return {str(ch["name"]): str(ch.get("unit", "")) for ch in profile.get("channels", [])}

