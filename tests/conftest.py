"""Test-wide settings.

Searches and trainings in tests run the eager time step (ESSDSL_COMPILE=0):
torch.compile's one-time compile costs tens of seconds per new process, which
the suite's time budget cannot pay for every run.  tests/test_fast.py checks
the compiled path itself.
"""

import os

os.environ.setdefault("ESSDSL_COMPILE", "0")
