"""The old design, as a baseline: a minimal consumer written the way the old pipeline was.

``for message in consumer:`` with auto-commit on and a flag set by the signal handler, so a stop
is only noticed when the next message arrives; with ``--separate`` it runs the separation in
process (one ``Separator``, loaded once) and produces a result per task, like the old worker.
A standalone script: it imports nothing from uvrd.

    python bench/oldway.py --bootstrap HOST:PORT --topic T --group G [--ready-file F]
                           [--separate --results R --model-dir D --model M --hop H --segment S --output-dir O]
"""

import argparse
import json
import os
import signal
import sys
from pathlib import Path

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer

stop_requested = False


def on_signal(signum, frame):
    global stop_requested
    stop_requested = True


class Ready(ConsumerRebalanceListener):
    def __init__(self, path):
        self.path = path

    def on_partitions_revoked(self, revoked):
        pass

    def on_partitions_assigned(self, assigned):
        if self.path and assigned:
            Path(self.path).write_text("ready")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--ready-file")
    p.add_argument("--separate", action="store_true")
    p.add_argument("--results")
    p.add_argument("--model-dir")
    p.add_argument("--model")
    p.add_argument("--hop", type=int, default=1024)
    p.add_argument("--segment", type=int, default=256)
    p.add_argument("--output-dir")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    separator = producer = None
    if args.separate:
        os.environ["TQDM_DISABLE"] = "1"
        import logging

        from audio_separator.separator import Separator

        separator = Separator(log_level=logging.WARNING, model_file_dir=args.model_dir, output_dir=args.output_dir,
                              output_format="WAV", mdx_params={"hop_length": args.hop, "segment_size": args.segment,
                                                               "overlap": 0.25, "batch_size": 1,
                                                               "enable_denoise": False})
        separator.load_model(model_filename=args.model)
        producer = KafkaProducer(bootstrap_servers=args.bootstrap)

    consumer = KafkaConsumer(bootstrap_servers=args.bootstrap, group_id=args.group, enable_auto_commit=True,
                             auto_offset_reset="earliest", session_timeout_ms=6000, heartbeat_interval_ms=1000,
                             max_poll_interval_ms=8000)
    consumer.subscribe([args.topic], listener=Ready(args.ready_file))
    for message in consumer:
        if stop_requested:
            break
        if separator is not None:
            task = json.loads(message.value)
            try:
                outputs = separator.separate(task["audio_path"])
                result = {"task_uuid": task["task_uuid"], "success": True, "stems": outputs}
            except Exception as e:  # the old worker reported and moved on
                result = {"task_uuid": task["task_uuid"], "success": False, "error_message": str(e)}
            producer.send(args.results, key=message.key, value=json.dumps(result).encode())
            producer.flush()
            try:
                os.unlink(task["audio_path"])
            except OSError:
                pass
        if stop_requested:
            break
    consumer.close()
    if producer is not None:
        producer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
