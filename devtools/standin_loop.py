"""``python -m devtools.standin_loop ARGS``: devtools.inprocess_loop with the stand-in accelerator's
forward in place and every MDX model's forward logged (standin_accelerator.py: its rate and busy log
from the same variables).  Bench only."""

import os
import sys

from devtools import inprocess_loop, standin_accelerator

if __name__ == "__main__":
    standin_accelerator.replace_forward(float(os.environ.get(standin_accelerator.RATE_ENV, "0.05")),
                                        os.environ.get(standin_accelerator.BUSY_LOG_ENV) or None)
    sys.exit(inprocess_loop.main())
