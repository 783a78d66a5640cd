"""uvrd's side of Kafka: the clients, the consumer-group member and its claims, the commit modes,
joining and leaving a group, the topics, the status topic, and the daemon shell that consumes."""
