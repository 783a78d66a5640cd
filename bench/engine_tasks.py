"""uvrd's engine child running tasks one at a time, ready as soon as its model is loaded (no warm-up):
what the first task paid before the warm-up.

    python -m bench.engine_tasks MODEL_DIR OUT_DIR AUDIO TASKS   (from the checkout's root)

Prints one JSON line: seconds from the engine's start to its ready message, and each task's own time
in the child (what the processor logs as ``separation_s``).
"""

import json
import sys
import time
from pathlib import Path

from devtools import tinymodel
from uvrd.processor.engine import Engine, EngineSettings, Job
from uvrd.processor.engine_protocol import Separated

TIMEOUT_S = 600


def main() -> int:
    model_dir, out, audio, tasks = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    engine = Engine(EngineSettings(
        model_dir=model_dir, output_dir=str(out), models=(tinymodel.TINY_MODEL,), output_format="wav",
        mdx_hop_length=tinymodel.HOP_LENGTH, mdx_segment_size=tinymodel.SEGMENT_SIZE, mdx_batch_size=1,
        warm_up=False))
    engine.start()
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while not engine.poll_ready(1):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the engine was not ready within {TIMEOUT_S} s")
        ready_s = time.monotonic() - engine.started_at
        seconds = []
        for i in range(tasks):
            engine.submit(Job(f"task-{i}", audio, tinymodel.TINY_MODEL, "wav", str(out / f"task-{i}")))
            while (result := engine.poll_result(1)) is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the tasks did not finish within {TIMEOUT_S} s")
            if not isinstance(result, Separated):
                raise RuntimeError(f"a task failed: {result}")
            seconds.append(result.seconds)
    finally:
        engine.close()
    print(json.dumps({"ready_s": ready_s, "seconds": seconds}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
