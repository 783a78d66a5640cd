"""audio-separator's own ensembles of several models, in-process: what uvrd's ensembles must agree with.

    python -m devtools.library_ensemble MODEL_DIR HOP SEGMENT OUT_DIR AUDIO ENSEMBLES_JSON MODEL...

ENSEMBLES_JSON is a list of [algorithm, weights or null]: one process imports audio-separator once
for all of them.  Prints one JSON line: {algorithm: {stem: file}}, stems named as uvrd names them
("vocals", "instrumental"), each ensemble's files in OUT_DIR/<algorithm>.
"""

import json
import logging
import os
import re
import sys


def main() -> int:
    model_dir, hop, segment, out_dir, audio, ensembles = sys.argv[1:7]
    models = sys.argv[7:]
    os.environ["TQDM_DISABLE"] = "1"
    from audio_separator.separator import Separator

    made = {}
    for algorithm, weights in json.loads(ensembles):
        target = os.path.join(out_dir, algorithm)
        os.makedirs(target, exist_ok=True)
        separator = Separator(log_level=logging.WARNING, model_file_dir=model_dir, output_dir=target,
                              output_format="WAV", ensemble_algorithm=algorithm, ensemble_weights=weights,
                              mdx_params={"hop_length": int(hop), "segment_size": int(segment), "overlap": 0.25,
                                          "batch_size": 1, "enable_denoise": False})
        separator.load_model(model_filename=models)
        stems = {}
        for path in separator.separate(audio):
            stem = re.search(r"_\(([^)]+)\)", os.path.basename(path)).group(1).lower().replace(" ", "_")
            stems[stem] = path if os.path.isabs(path) else os.path.join(target, path)
        made[algorithm] = stems
    print(json.dumps(made))
    return 0


if __name__ == "__main__":
    sys.exit(main())
