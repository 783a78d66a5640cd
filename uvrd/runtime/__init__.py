"""What every uvrd daemon runs inside: signals and phases (lifecycle), systemd (notify, drain),
logs to journald (logs, journal), time budgets (deadline, backoff) and the one wait (wait)."""
