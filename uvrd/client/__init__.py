"""The HTTP client of uvrd's api, for the commands and the demo."""
