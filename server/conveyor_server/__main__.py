"""`python -m conveyor_server [flags]` is `conveyor serve [flags]`."""

import sys

from conveyor_server.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    main(argv if argv[:1] == ["serve"] else ["serve", *argv])
