"""``ctr serve``: the bidder's scoring endpoint (FastAPI + uvicorn, one process)."""

from __future__ import annotations

from serving.lifecycle import DEFAULT_MODEL_NAME, DEFAULT_POLL_SECONDS
from shared.errors import ConfigurationError


def register(sub) -> None:
    """Add the ``serve`` subcommand."""
    p = sub.add_parser(
        "serve", help="serve the scoring endpoint (FastAPI + uvicorn) for the model behind a registry alias",
        description="Serve POST /v1/score and /v1/openrtb on --host/--port (default 127.0.0.1:8080). "
                    "Loads the version behind --alias of --model-name from the MLflow registry (plain files, "
                    "checksums verified) and follows the alias; or serves --model-dir as is. "
                    "Set CTR_API_TOKEN to require 'Authorization: Bearer <token>' on the scoring endpoints.")
    p.add_argument("--model-name", default=DEFAULT_MODEL_NAME,
                   help=f"registered model name (default {DEFAULT_MODEL_NAME})")
    p.add_argument("--alias", default="champion", help="registry alias to serve and follow (default champion)")
    p.add_argument("--model-dir", help="serve this plain model directory instead of the registry (no polling)")
    p.add_argument("--poll-seconds", type=float, default=DEFAULT_POLL_SECONDS,
                   help=f"how often to check the alias for a new version; 0 disables (default {DEFAULT_POLL_SECONDS:g})")
    p.add_argument("--no-prediction-log", action="store_true",
                   help="do not write the prediction log under <home>/predictions")
    p.add_argument("--log-capacity", type=int, default=None,
                   help="prediction-log queue capacity in records; beyond it records are dropped and counted")
    p.set_defaults(func=run_serve)


def run_serve(args, settings) -> int:
    """``ctr serve``: serve the scoring endpoint until interrupted."""
    import logging
    from pathlib import Path

    from serving.server import ServeOptions, serve_forever

    if args.poll_seconds < 0:
        raise ConfigurationError("--poll-seconds must be >= 0")
    kwargs = {}
    if args.log_capacity is not None:
        if args.log_capacity < 1:
            raise ConfigurationError("--log-capacity must be >= 1")
        kwargs["log_capacity"] = args.log_capacity
    options = ServeOptions(
        model_name=args.model_name, alias=args.alias,
        model_dir=Path(args.model_dir).resolve() if args.model_dir else None,
        poll_seconds=args.poll_seconds, token=ServeOptions.token_from_env(),
        prediction_log=not args.no_prediction_log, **kwargs)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve_forever(settings, options)  # a ModelLoadError is an ArtifactError: one line from the CLI
