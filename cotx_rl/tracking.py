"""The one W&B setup of every stage that tracks (sft, grpo, eval).

Without `WANDB_API_KEY` a run goes offline and says so once: it writes a run folder that `wandb sync` uploads later.
With a key but no route to the W&B server (an air-gapped cluster), W&B would retry for minutes and then fail the
stage; a short probe of the server first sends such a run offline too, with the reason.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

logger = logging.getLogger(__name__)
PROBE_TIMEOUT_SECONDS = 3.0
DEFAULT_WANDB_HOST = "https://api.wandb.ai"


def wants_wandb(report_to) -> bool:
    """Whether a `report_to` value (a string or a list, as TRL's configs hold it) includes W&B."""
    report_to = report_to or []
    report_to = [report_to] if isinstance(report_to, str) else list(report_to)
    return "wandb" in report_to or "all" in report_to


def wandb_reachable(base_url: str | None = None, timeout: float = PROBE_TIMEOUT_SECONDS) -> str | None:
    """None when a TCP connection to the W&B server opens within `timeout`, else why not."""
    url = urlparse(base_url or os.environ.get("WANDB_BASE_URL") or DEFAULT_WANDB_HOST)
    host = url.hostname or "api.wandb.ai"
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as error:
        return f"{host}:{port} is unreachable ({error})"


def configure_wandb(report_to, run_dir: str | os.PathLike) -> bool:
    """Set W&B's environment for a stage that reports to it; returns whether it does.

    Runs are written under `run_dir` (unless `WANDB_DIR` is set). Offline without an API key, or when the server does
    not answer; `WANDB_MODE` set by the user is left alone.
    """
    if not wants_wandb(report_to):
        return False
    os.environ.setdefault("WANDB_DIR", str(Path(run_dir)))
    Path(os.environ["WANDB_DIR"]).mkdir(parents=True, exist_ok=True)
    if os.environ.get("WANDB_MODE") is not None:
        return True
    if not os.environ.get("WANDB_API_KEY"):
        reason = "WANDB_API_KEY is not set"
    else:
        reason = wandb_reachable()
    if reason is not None:
        os.environ["WANDB_MODE"] = "offline"
        logger.warning(
            "%s: W&B runs offline in %s/wandb; upload later with `wandb sync`. Set `report_to: none` to turn tracking "
            "off.",
            reason,
            os.environ["WANDB_DIR"],
        )
    return True
