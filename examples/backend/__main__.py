"""python -m examples.backend [--host H] [--port N]: the example service under uvicorn."""

from __future__ import annotations

import argparse

import uvicorn


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m examples.backend", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    args = p.parse_args()
    uvicorn.run("examples.backend.app:app", host=args.host, port=args.port)


if __name__ == "__main__":
    main()
