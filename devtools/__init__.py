"""Things uvrd's demo, benchmarks and tests generate for themselves, offline."""
