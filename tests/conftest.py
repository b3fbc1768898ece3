"""Test-wide settings.

Searches and trainings in tests run the eager time step (ESSDSL_COMPILE=0):
torch.compile's one-time compile costs tens of seconds per new process, which
the suite's time budget cannot pay for every run; tests/test_fast.py checks
the compiled path itself.  Searches skip the from-scratch training of the
derived genotype (ESSDSL_FINAL_EPOCHS=0) unless a test asks for it
(tests/test_demo.py does).
"""

import os

os.environ.setdefault("ESSDSL_COMPILE", "0")
os.environ.setdefault("ESSDSL_FINAL_EPOCHS", "0")
