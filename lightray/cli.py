"""The ``lightray`` command line (subcommands grow with the cluster features)."""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    from . import __version__
    parser = argparse.ArgumentParser(prog="lightray", description="lightray command line")
    parser.add_argument("--version", action="version", version=f"lightray {__version__}")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("version", help="print the version")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "version":
        print(f"lightray {__version__}")
        return 0
    parser.print_help()
    return 0


if __name__ == "__main__":
    sys.exit(main())
