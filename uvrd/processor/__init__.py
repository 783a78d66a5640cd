"""``uvrd processor``: the daemon (accept, process, settle), the separation engine and its child,
the engine protocol, the audio checks, the attempt ledger and the priority choice."""
