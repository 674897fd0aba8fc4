"""Argument types every stage's subcommands share: a clear argparse message for a bad value."""

from __future__ import annotations

import argparse
from datetime import date
from typing import Callable


def iso_date(text: str) -> date:
    """A ``YYYY-MM-DD`` flag value."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An integer flag type that refuses values below ``minimum``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
