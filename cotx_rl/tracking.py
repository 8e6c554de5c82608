"""The one W&B setup of every stage that tracks (sft, grpo, eval).

Without `WANDB_API_KEY` a run goes offline and says so once: it writes a run folder that `wandb sync` uploads later.
With a key but no route to the W&B server (an air-gapped cluster, or a proxy that answers in its place), W&B would
retry for minutes and then fail the stage; a short probe of the server's API first sends such a run offline too, with
the reason. A `WANDB_MODE` set by the user skips the probe.
"""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse
from urllib.request import Request, urlopen

logger = logging.getLogger(__name__)
PROBE_TIMEOUT_SECONDS = 3.0
DEFAULT_WANDB_HOST = "https://api.wandb.ai"
WANDB_API_STATUSES = frozenset({400, 401, 403})  # besides 2xx: W&B's API refusing a request (here: without a key)


def wants_wandb(report_to) -> bool:
    """Whether a `report_to` value (a string or a list, as TRL's configs hold it) includes W&B."""
    report_to = report_to or []
    report_to = [report_to] if isinstance(report_to, str) else list(report_to)
    return "wandb" in report_to or "all" in report_to


def wandb_reachable(base_url: str | None = None, timeout: float = PROBE_TIMEOUT_SECONDS) -> str | None:
    """None when the W&B server's API answers within `timeout`, else why not.

    A TCP connection is not enough: a proxy, a captive portal or a wrong `WANDB_BASE_URL` accepts it, and W&B then
    retries for minutes before it fails the stage. So the probe asks W&B's GraphQL endpoint (without the key: no
    secret leaves for a server not yet known to be W&B's). W&B's API answers 200, or 400/401/403 to a request it will
    not serve; any other status is something else answering. A TLS failure is left for W&B to judge: it has its own
    certificate settings.
    """
    base = (base_url or os.environ.get("WANDB_BASE_URL") or DEFAULT_WANDB_HOST).rstrip("/")
    url = urlparse(base)
    host = url.hostname or "api.wandb.ai"
    port = url.port or (443 if url.scheme == "https" else 80)
    request = Request(f"{base}/graphql", data=b'{"query": "{ __typename }"}',
                      headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urlopen(request, timeout=timeout):
            return None
    except HTTPError as error:
        if error.code in WANDB_API_STATUSES:
            return None
        return f"{base}/graphql answered HTTP {error.code}, not as W&B's API"
    except URLError as error:
        if isinstance(error.reason, ssl.SSLError):
            return None
        return f"{host}:{port} is unreachable ({error.reason})"
    except OSError as error:  # a timeout while reading, a connection reset
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
