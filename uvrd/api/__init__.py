"""``uvrd api``: the HTTP front that accepts audio and a webhook URL and queues a task in Kafka."""
