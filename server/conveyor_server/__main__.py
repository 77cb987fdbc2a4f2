"""`python -m conveyor_server [flags]` is `conveyor serve [flags]`; other subcommands pass."""

import sys

from conveyor_server.cli import build_parser, main

if __name__ == "__main__":
    argv = sys.argv[1:]
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    is_passed = bool(argv) and (argv[0] in commands or argv[0] == "--version")  # type: ignore[operator]
    main(argv if is_passed else ["serve", *argv])
