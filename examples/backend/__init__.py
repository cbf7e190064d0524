"""An example backend: start raftline runs over HTTP and stream their events (SSE)."""
