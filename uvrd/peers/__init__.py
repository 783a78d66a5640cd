"""Talking to peers uvrd does not trust: outgoing HTTP checked against SSRF and DNS rebinding, and their numbers parsed strictly."""
