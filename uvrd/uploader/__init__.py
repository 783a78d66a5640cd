"""``uvrd uploader``: the daemon, the webhook (its body and signature) and its delivery."""
