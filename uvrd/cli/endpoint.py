"""Which api a client command talks to, and with which token: the options, then UVRD_API_URL /
UVRD_API_TOKEN, then the configuration (api.public_url, the first of api.tokens)."""

from __future__ import annotations

import os

from uvrd.cli.startup import add_config_argument, load_config
from uvrd.client.api_client import ApiClient


def add_endpoint_arguments(parser) -> None:
    parser.add_argument("--api", help="API base URL (default: api.public_url)")
    parser.add_argument("--token", help="bearer token (default: UVRD_API_TOKEN or the first api.tokens)")
    add_config_argument(parser)


def client(args) -> ApiClient:
    url = args.api or os.environ.get("UVRD_API_URL")
    token = args.token or os.environ.get("UVRD_API_TOKEN")
    if not url or not token:
        config = load_config(args)
        url = url or config.api.public_url
        token = token or (config.api.tokens[0] if config.api.tokens else "")
    return ApiClient(url, token)
