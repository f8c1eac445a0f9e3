"""Which Ray cluster a run uses, connecting to it, and leaving things as they were.

The address: --ray-address, else RAY_ADDRESS (what `ray job submit` sets for its entrypoint); `auto`
is the cluster started on this machine with `ray start`, HOST:PORT a head node's GCS. With neither,
a private local instance (`address="local"`), stopped again at the end. Never a bare `ray.init()`:
it attaches silently to whatever cluster was last started on this machine, a stale one included.

Ray Client (`ray://`) is refused: Ray Data runs its scheduler in the driver, so the driver must run on
the cluster (`ray job submit`, or on the head node).

Token authentication: the process is put in the cluster's mode before it connects (auth.py).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from shufflenet_cli.errors import EngineError, UsageError
from shufflenet_cli.ray_engine import auth

INSTALL_HINT = "pip install 'shufflenet-cli[ray]'"
CLIENT_REFUSED = "Ray Client addresses (ray://) are not supported: Ray Data needs its driver on the cluster"
CLIENT_HINT = (
    "submit the run as a job, `ray job submit --address http://HEAD:8265 -- shufflenet predict ... "
    "--engine ray`, or run it on the head node with --ray-address auto"
)
# How long the head's port may take to accept a TCP connection before the address counts as wrong:
# ray.init itself waits far longer (minutes) on an address where nothing answers.
REACH_TIMEOUT_S = 10.0
# What a run asks of ray.init: stdout carries the results, so the workers' output is not forwarded to
# the driver; Ray's own chatter below errors goes to its log files (/tmp/ray/session_latest/logs).
QUIET = {"log_to_driver": False, "logging_level": logging.ERROR, "configure_logging": True}


@dataclass(frozen=True)
class Session:
    """The cluster a run uses: in words, its CPUs and GPUs when the run began, and whether this run
    started it (and stops it)."""

    described: str
    cpus: float
    gpus: float
    started: bool


def import_ray() -> Any:
    """Ray, or UsageError (exit 2) naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise UsageError("--engine ray needs Ray, which is not installed", hint=INSTALL_HINT) from None
    return ray


def address_for(option: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The address to connect to: --ray-address, else RAY_ADDRESS; None for a private local instance.
    UsageError (exit 2) for ray:// and for anything that is neither `auto` nor HOST:PORT."""
    environ = os.environ if environ is None else environ
    given = (option or "").strip() or environ.get("RAY_ADDRESS", "").strip()
    source = "--ray-address" if (option or "").strip() else "RAY_ADDRESS"
    if not given or given == "local":
        return None
    if given.startswith("ray://"):
        raise UsageError(CLIENT_REFUSED, hint=CLIENT_HINT)
    if "://" in given:  # http://HEAD:8265 is the job server's address, not the cluster's
        raise UsageError(
            f"{source} {given!r} is not a cluster address",
            hint="use auto or HOST:PORT (the head's GCS port, 6379 by default); an http:// address is "
            "for `ray job submit --address`",
        )
    if given != "auto":
        _host_port(given, source)
    return given


def _host_port(address: str, source: str = "--ray-address") -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"{source} {address!r} is not a cluster address", hint="use auto or HOST:PORT")
    return host, int(port)


@contextmanager
def connect(address: str | None) -> Iterator[Session]:
    """Connected to `address` (as `address_for` gives it) for the block, disconnected after it; a
    private local instance where it is None, stopped after the block. Where this process is already
    connected (a notebook, or a script that called ray.init), that connection is used and kept."""
    ray = import_ray()
    if ray.is_initialized():
        yield _session(ray, "the Ray cluster this process is connected to", started=False)
        return
    saved = auth.saved_mode()
    try:
        if address is None:
            # "local": a new instance, never one that happens to be running on this machine
            _init(ray, None, include_dashboard=False)
            described = "a private local Ray instance"
        else:
            if address != "auto":
                _check_reachable(address)
            auth.match_cluster(address, saved)
            _init(ray, address)
            described = f"the Ray cluster at {address}"
        try:
            yield _session(ray, described, started=address is None)
        finally:
            ray.shutdown()  # stops a private instance; from a cluster, disconnects
    finally:
        # ray.init puts this process in token mode for a new local instance, auth.match_cluster in the
        # cluster's mode: neither is left behind
        auth.restore(saved)


def _init(ray: Any, address: str | None, **kwargs: Any) -> None:
    """ray.init for `address` ("local" for None), its failures as EngineError (exit 3) with what to do."""
    where = f"the Ray cluster at {address}" if address is not None else "a local Ray instance"
    try:
        ray.init(address=address or "local", **kwargs, **QUIET)
    except ConnectionError as exc:
        if address == "auto":
            raise EngineError(
                "no running Ray cluster found on this machine (--ray-address auto)",
                hint="start one with `ray start --head`, or leave --ray-address out for a private local instance",
            ) from None
        raise EngineError(f"could not connect to {where}: {exc}", hint=auth.TOKEN_HINT) from None
    except Exception as exc:  # noqa: BLE001 - Ray's own start-up failures, as one line and a hint
        if type(exc).__name__ == "AuthenticationError":  # ray.exceptions.AuthenticationError
            raise EngineError(
                f"{where} uses token authentication and no token was found", hint=auth.NO_TOKEN_HINT
            ) from None
        raise EngineError(f"Ray could not start or connect to {where}: {type(exc).__name__}: {exc}") from None


def _check_reachable(address: str) -> None:
    """EngineError at once where nothing accepts a connection at HOST:PORT (ray.init would wait there
    for minutes)."""
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=REACH_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise EngineError(
            f"nothing answers at {address} ({reason}): no Ray cluster's head node there",
            hint="check the address (the head's GCS port, 6379 by default; `ray status` on the head shows it)",
        ) from None


def _session(ray: Any, described: str, started: bool) -> Session:
    resources = ray.cluster_resources()
    return Session(described, float(resources.get("CPU", 0.0)), float(resources.get("GPU", 0.0)), started)
