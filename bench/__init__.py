"""uvrd's benchmarks: ``python -m bench`` (``make bench``) writes docs/bench.md and docs/bench/*.png."""
