"""The shell every consuming daemon runs in: connect, READY, serve, drain, close."""
