"""The warm worker: stages that start in a fraction of a second instead of seconds.

Every DVC stage is its own `kiln run` process, and each pays for `import torch` and its
libraries (seconds on a small CPU). A warm worker is a process that holds them imported
and forks a fresh child for each stage; `kiln run` becomes a thin client that hands the
child its command line, environment, working directory and standard streams, forwards
Ctrl-C and SIGTERM to it, stops it on Ctrl-Z, and exits with its status. DVC sees an
ordinary process.

- client.py: what `kiln run` does first (light: no torch).
- server.py: the worker (`python -m torchkiln.warm.server`), started by itself when useful
  (under `dvc repro` or `kiln repro`) and gone when idle.
- protocol.py: where the socket lives and what crosses it.

`KILN_WARM=0` turns it off: everything runs as a plain process.
"""
