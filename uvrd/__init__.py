"""uvrd: vocal/instrument separation as systemd-native Kafka daemons."""

__version__ = "0.1.0"
