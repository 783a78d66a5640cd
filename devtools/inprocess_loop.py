"""One in-process ``Separator`` looping over files: the lower bound uvrd is compared against (the
benchmarks), and the stems uvrd's must equal (the quality tests).

    python -m devtools.inprocess_loop MODEL_DIR MODEL HOP SEGMENT OUT_DIR GROUPS_JSON [WARMUP_FILE]

GROUPS_JSON is a list of lists of files; each group is separated in one loop.  Prints one JSON
line: the import and model-load times and each group's loop time (time.monotonic()).  The stems are
WAV unless ``UVRD_INPROCESS_FORMAT`` names another of audio-separator's formats.
"""

import json
import logging
import os
import sys
import time


def main() -> int:
    started = time.monotonic()
    model_dir, model, hop, segment, out_dir, groups = sys.argv[1:7]
    warmup = sys.argv[7] if len(sys.argv) > 7 else None
    os.environ["TQDM_DISABLE"] = "1"
    from audio_separator.separator import Separator

    imported = time.monotonic()
    separator = Separator(log_level=logging.WARNING, model_file_dir=model_dir, output_dir=out_dir,
                          output_format=os.environ.get("UVRD_INPROCESS_FORMAT", "WAV").upper(), mdx_params={"hop_length": int(hop), "segment_size": int(segment),
                                                           "overlap": 0.25, "batch_size": 1,
                                                           "enable_denoise": False})
    separator.load_model(model_filename=model)
    loaded = time.monotonic()
    if warmup:  # the first separation pays one-off initialisation (numba, onnxruntime): time it apart
        separator.separate(warmup)
    warm = time.monotonic()
    loops, per_file, outputs = [], [], []
    for group in json.loads(groups):
        t0 = time.monotonic()
        for path in group:
            t = time.monotonic()
            outputs.append(_by_stem(separator, path, separator.separate(path), out_dir))
            per_file.append(time.monotonic() - t)
        loops.append(time.monotonic() - t0)
    print(json.dumps({"import_s": imported - started, "load_s": loaded - imported, "warmup_s": warm - loaded, "loops_s": loops,
                      "per_file_s": per_file, "outputs": outputs, "device": str(separator.torch_device)}), flush=True)
    return 0


def _by_stem(separator, audio_path: str, files: list[str], out_dir: str) -> dict[str, str]:
    """audio-separator's own file names (``<input>_(<Stem>)_<model>``) read as uvrd names stems."""
    from uvrd.processor.engine_job import output_affixes, stem_name

    named = output_affixes(separator.model_instance, audio_path)
    return {stem_name(f, *named): os.path.join(out_dir, f) for f in files}


if __name__ == "__main__":
    sys.exit(main())
