"""Run a raftline worker from a source checkout: `python worker.py --help`
(installed: `raftline-worker`). The program lives in raftline/worker.py.
"""

import sys

if __name__ == "__main__":
    from raftline.worker import main

    sys.exit(main())
else:  # `import worker` (the pre-0.2 name): the one copy of the worker module
    from raftline._compat import alias

    alias(__name__)
