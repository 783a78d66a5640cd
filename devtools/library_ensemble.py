"""audio-separator's own ensemble of several models, in-process: what uvrd's ensembles must agree with.

    python -m devtools.library_ensemble MODEL_DIR HOP SEGMENT OUT_DIR AUDIO ALGORITHM WEIGHTS_JSON MODEL...

Prints one JSON line: {stem: file}, stems named as uvrd names them ("vocals", "instrumental").
"""

import json
import logging
import os
import re
import sys


def main() -> int:
    model_dir, hop, segment, out_dir, audio, algorithm, weights = sys.argv[1:8]
    models = sys.argv[8:]
    os.environ["TQDM_DISABLE"] = "1"
    from audio_separator.separator import Separator

    separator = Separator(log_level=logging.WARNING, model_file_dir=model_dir, output_dir=out_dir, output_format="WAV",
                          ensemble_algorithm=algorithm, ensemble_weights=json.loads(weights),
                          mdx_params={"hop_length": int(hop), "segment_size": int(segment), "overlap": 0.25,
                                      "batch_size": 1, "enable_denoise": False})
    separator.load_model(model_filename=models)
    outputs = separator.separate(audio)
    stems = {}
    for path in outputs:
        stem = re.search(r"_\(([^)]+)\)", os.path.basename(path)).group(1).lower().replace(" ", "_")
        stems[stem] = path if os.path.isabs(path) else os.path.join(out_dir, path)
    print(json.dumps(stems))
    return 0


if __name__ == "__main__":
    sys.exit(main())
