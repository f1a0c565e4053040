"""Root pytest configuration: notebooks run at the fast ``ci`` scale under pytest."""

import os

os.environ.setdefault("COURSE_SCALE", "ci")
os.environ.setdefault("MPLBACKEND", "Agg")
