"""What the plot scripts share: matplotlib on the Agg backend (no display needed), a CSV cell read
as a number, a title wrapped to a width, and a PNG written so that no reader ever sees half of it.
Needs only Debian's python3-matplotlib.
"""

import math
import os
import sys
import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402,F401  (after the backend is chosen; for the scripts)


def number(text):
    """The cell as a float; NaN when it is empty, "nan" or not a number (a diverged run)."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def wrapped(title, width):
    """`title` with each of its lines wrapped to `width` characters."""
    return "\n".join(textwrap.fill(part, width) for part in title.split("\n"))


def save(fig, output, dpi, program):
    """Writes `fig` to `output` through a temporary file beside it and a rename; exits with a
    message naming `program` and the file when it cannot."""
    directory = os.path.dirname(os.path.abspath(output))
    temp = os.path.join(directory, f".{os.path.basename(output)}.tmp-{os.getpid()}.png")
    try:
        fig.savefig(temp, dpi=dpi)
        os.replace(temp, output)
    except OSError as e:
        sys.exit(f"{program}: cannot write '{output}': {e.strerror}")
    finally:
        if os.path.exists(temp):
            os.remove(temp)
