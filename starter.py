"""The raftline CLI from a source checkout: `python starter.py demo` (installed: `raftline`).

The program lives in raftline/cli.py, so the installed package carries it.
"""

import sys

if __name__ == "__main__":
    from raftline.cli import main

    sys.exit(main())
else:  # `import starter` (the pre-0.2 name): the one copy of the CLI module
    from raftline._compat import alias

    alias(__name__)
