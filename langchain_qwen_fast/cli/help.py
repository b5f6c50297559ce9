"""The ``--help`` of every ``qwen-fast`` command: each option shows its default, and no text carries markup.

argparse's own ``ArgumentDefaultsHelpFormatter`` prints ``(default: None)`` for options without one and
repeats defaults that the help text already names; this one adds ``(default: X)`` only where there is a
value to show and the text does not say it already. :func:`plain` turns a docstring's reST markup
(````x````, ``:class:`x```) into the plain words a terminal should show.
"""

from __future__ import annotations

import argparse
import re

_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def plain(text: str) -> str:
    """A docstring paragraph as terminal text: ````x```` and ``:class:`x``` become ``x``."""
    return _ROLE.sub(r"\1", text).replace("``", "")


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Each option's default shown where there is one and its help does not name it already."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "default" in text.lower()
            or default is None
            or default is False
            or default is argparse.SUPPRESS
            or default == []
            or action.required
            or isinstance(action, (argparse._HelpAction, argparse._VersionAction))
        ):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        shown = shown.replace("%", "%%")  # argparse formats help strings with %
        return f"{text} (default: {shown})" if text else f"default: {shown}"


class RawDefaultsHelpFormatter(DefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """As :class:`DefaultsHelpFormatter`, with the description kept as written (examples on their own lines)."""
