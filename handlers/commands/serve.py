"""``measures serve``: the single-patient FHIR API (handlers/api) under uvicorn; docs at ``/docs``."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve the $evaluate-measure API (uvicorn)", description=__doc__
    )
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--data", default=None, help="lake folder or s3://bucket/prefix (default MEASURES_DATA)"
    )
    parser.add_argument(
        "--valuesets", default=None, help="official ValueSet expansions (default MEASURES_VALUESETS)"
    )
    parser.add_argument("--measures", default=None, help="comma-separated measure ids (default: all)")
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from handlers.api.app import create_app
    from handlers.settings import load_settings

    settings = load_settings(data=args.data, valuesets=args.valuesets, measures=args.measures)
    app = create_app(settings)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0
