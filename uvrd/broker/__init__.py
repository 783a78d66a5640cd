"""``uvrd broker``: the single-host Kafka-compatible broker (Tansu on a local object store)."""
