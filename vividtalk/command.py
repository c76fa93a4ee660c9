"""What both command-line programs (``vividtalk``, ``vividtalk-prep``) share: bad input is one
clear line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import sys


def run_command(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse and dispatch to ``args.func``; bad input (ValueError, FileNotFoundError) becomes
    one clear line on stderr and exit code 2, with no traceback."""
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"{parser.prog} {args.command}: error: {err}", file=sys.stderr)
        return 2
