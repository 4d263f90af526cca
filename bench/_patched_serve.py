"""``python -m extauthz serve`` with experimental knobs, for ``bench/server_options.py``.

    python bench/_patched_serve.py '{"switch_interval": 0.001}' serve --config FILE

The JSON sets what to try without touching the product code: extra gRPC server
options, ``sys.setswitchinterval``, the stock ``ThreadPoolExecutor`` instead of the
call pool, and a cheaper decision-log pipeline (orjson into a bytes logger, no
per-line flush). Anything that measures well here is then proposed
as a product change.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def apply(knobs: dict[str, Any]) -> None:
    """Install the patches ``knobs`` asks for."""
    import grpc

    if "switch_interval" in knobs:
        sys.setswitchinterval(float(knobs["switch_interval"]))
    extra = [tuple(o) for o in knobs.get("grpc_options", [])]
    if extra:
        original = grpc.server

        def server(*args: Any, **kwargs: Any) -> Any:
            kwargs["options"] = [*kwargs.get("options", []), *extra]
            return original(*args, **kwargs)

        grpc.server = server
    if knobs.get("stock_pool"):
        # the gRPC calls on concurrent.futures.ThreadPoolExecutor, as before the call pool
        from concurrent import futures

        from extauthz.server import app

        vars(app)["CallPool"] = futures.ThreadPoolExecutor
    if knobs.get("fast_log"):
        from extauthz import logging as logging_mod

        configure = logging_mod.configure

        def fast(level: str = "info", fmt: str = "json", stream: Any = None) -> None:
            configure(level, fmt, stream)
            import orjson
            import structlog

            out = open(sys.stdout.fileno(), "wb", buffering=1 << 16, closefd=False)  # noqa: SIM115
            structlog.configure(
                processors=[
                    structlog.processors.add_log_level,
                    structlog.processors.TimeStamper(fmt="iso", utc=True),
                    structlog.processors.format_exc_info,
                    logging_mod.redact,
                    structlog.processors.JSONRenderer(serializer=orjson.dumps),
                ],
                logger_factory=structlog.BytesLoggerFactory(file=out),
                wrapper_class=structlog.make_filtering_bound_logger(20),
                cache_logger_on_first_use=True,
            )

        logging_mod.configure = fast


def main() -> int:
    apply(json.loads(sys.argv[1]))
    from extauthz.cli import main as cli_main

    return int(cli_main(sys.argv[2:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
