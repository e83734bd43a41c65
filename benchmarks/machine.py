"""What every benchmark prints beside its figures: the CPU it ran on and how busy the
machine was (the figures of a shared machine are upper bounds). Imported by the scripts
of this folder, which Python puts on the path when it runs one of them."""

from __future__ import annotations

import os
import subprocess


def machine() -> str:
    """lscpu's model name and the core count."""
    model = "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        out = ""
    for line in out.splitlines():
        if line.startswith("Model name:"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{model}, {os.cpu_count()} cores"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} (1, 5, 15 min)"
