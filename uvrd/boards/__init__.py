"""uvrd's own topics: the boards each daemon reads and writes (status, cancellations, workers, dead letters, replays, queues) and the topic list."""
