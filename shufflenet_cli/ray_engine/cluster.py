"""Which Ray cluster a run uses, connecting to it, and leaving things as they were.

The address: --ray-address, else RAY_ADDRESS (what `ray job submit` sets for its entrypoint); `auto`
is the cluster started on this machine with `ray start`, HOST:PORT a head node's GCS. With neither,
a private local instance (`address="local"`), stopped again at the end. Never a bare `ray.init()`:
it attaches silently to whatever cluster was last started on this machine, a stale one included.

Ray Client (`ray://`) is refused: Ray Data runs its scheduler in the driver, so the driver must run on
the cluster (`ray job submit`, or on the head node).

Token authentication: every process of a cluster, drivers included, must use the cluster's mode
(RAY_AUTH_MODE). A driver in token mode on a cluster without it connects, but then refuses the calls
the cluster makes to it (they carry no token): the GCS takes a refused call about an actor's
references for "all references removed" and destroys the actor before it starts. A driver without
the token on a cluster that uses it only times out, as "Failed to connect". Ray reads the mode once
per process: a private instance puts this process in token mode (ray.init does), and a later
connection would inherit it. So before connecting, the head's GCS is asked once without a token:
refused means token mode, answered means none. The process is put in that mode (and the token at
hand, if any, is tried the same way, so that a wrong one fails at once), and put back after the run.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shufflenet_cli.errors import EngineError, UsageError

INSTALL_HINT = "pip install 'shufflenet-cli[ray]'"
CLIENT_REFUSED = "Ray Client addresses (ray://) are not supported: Ray Data needs its driver on the cluster"
CLIENT_HINT = (
    "submit the run as a job, `ray job submit --address http://HEAD:8265 -- shufflenet predict ... "
    "--engine ray`, or run it on the head node with --ray-address auto"
)
TOKEN_HINT = (
    "if the cluster uses token authentication (Ray's default for new clusters), set RAY_AUTH_MODE=token "
    "and RAY_AUTH_TOKEN to its token (`ray get-auth-token` on the head node prints it)"
)
NO_TOKEN_HINT = (
    "set RAY_AUTH_TOKEN to the cluster's token (`ray get-auth-token` on the head node prints it), "
    "or put it in ~/.ray/auth_token"
)
AUTH_MODE = "RAY_AUTH_MODE"
# How long the head's GCS may take to answer the authentication probe before the mode counts as
# unknown (ray.init then finds out for itself, and fails as it does).
PROBE_TIMEOUT_S = 10.0
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
    saved = os.environ.get(AUTH_MODE)
    try:
        if address is None:
            # "local": a new instance, never one that happens to be running on this machine
            _init(ray, None, include_dashboard=False)
            described = "a private local Ray instance"
        else:
            if address != "auto":
                _check_reachable(address)
            _match_auth_mode(address, saved)
            _init(ray, address)
            described = f"the Ray cluster at {address}"
        try:
            yield _session(ray, described, started=address is None)
        finally:
            ray.shutdown()  # stops a private instance; from a cluster, disconnects
    finally:
        # ray.init puts this process in token mode for a new local instance, _match_auth_mode in the
        # cluster's mode: neither is left behind, in the environment or in Ray's cached configuration
        if saved is None:
            os.environ.pop(AUTH_MODE, None)
        else:
            os.environ[AUTH_MODE] = saved
        _reload_auth_mode()


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
        raise EngineError(f"could not connect to {where}: {exc}", hint=TOKEN_HINT) from None
    except Exception as exc:  # noqa: BLE001 - Ray's own start-up failures, as one line and a hint
        if type(exc).__name__ == "AuthenticationError":  # ray.exceptions.AuthenticationError
            raise EngineError(f"{where} uses token authentication and no token was found", hint=NO_TOKEN_HINT) from None
        raise EngineError(f"Ray could not start or connect to {where}: {type(exc).__name__}: {exc}") from None


def _match_auth_mode(address: str, saved: str | None) -> None:
    """This process in the authentication mode of the cluster at `address` (HOST:PORT or auto), as the
    cluster's GCS shows it. EngineError (exit 3) at once for a mode or token that cannot work: the
    cluster uses tokens and none is at hand, or it refuses the one at hand; RAY_AUTH_MODE set to the
    other mode than the cluster's. Where the GCS cannot be asked, RAY_AUTH_MODE is left as it is."""
    gcs = _gcs_address(address)
    uses_token = _refused(gcs, None) if gcs is not None else None
    if gcs is None or uses_token is None:
        return
    where = f"the Ray cluster at {address}"
    mode = (saved or "").lower()
    if mode in ("token", "disabled") and (mode == "token") != uses_token:
        if uses_token:
            raise EngineError(f"{where} uses token authentication, and RAY_AUTH_MODE is {saved!r}", hint=TOKEN_HINT)
        raise EngineError(
            f"{where} does not use token authentication, and RAY_AUTH_MODE is {saved!r}",
            hint="unset RAY_AUTH_MODE (or set it to disabled) for this cluster: a driver in token mode "
            "refuses the cluster's calls to it, which carry no token",
        )
    if uses_token:
        token = _token()
        if token is None:
            raise EngineError(f"{where} uses token authentication and no token was found", hint=NO_TOKEN_HINT)
        if _refused(gcs, token):
            raise EngineError(
                f"{where} refuses the authentication token found here",
                hint="set RAY_AUTH_TOKEN to the cluster's token (`ray get-auth-token` on the head node "
                "prints it); RAY_AUTH_TOKEN comes before RAY_AUTH_TOKEN_PATH and ~/.ray/auth_token",
            )
    if saved is None:
        os.environ[AUTH_MODE] = "token" if uses_token else "disabled"
    _reload_auth_mode()


def _gcs_address(address: str) -> str | None:
    """HOST:PORT of the cluster's GCS: the address itself, or for auto the cluster started on this
    machine (None where there is none: ray.init then says so)."""
    if address != "auto":
        return address
    try:
        from ray._private.services import canonicalize_bootstrap_address

        return canonicalize_bootstrap_address("auto")
    except Exception:  # noqa: BLE001 - no cluster found, or Ray's private API changed: ray.init decides
        return None


def _refused(gcs: str, token: str | None) -> bool | None:
    """Whether the GCS at `gcs` refuses a call that carries `token` (None: no token) as unauthenticated;
    None where it gives no answer either way."""
    try:
        import grpc
        from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc
    except ImportError:
        return None
    metadata = [("authorization", f"Bearer {token}")] if token is not None else None
    with grpc.insecure_channel(gcs) as channel:
        stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(channel)
        try:
            request = gcs_service_pb2.GetClusterIdRequest()  # type: ignore[attr-defined]
            stub.GetClusterId(request, timeout=PROBE_TIMEOUT_S, metadata=metadata)
        except grpc.RpcError as exc:
            return True if exc.code() == grpc.StatusCode.UNAUTHENTICATED else None
    return False


def _reload_auth_mode() -> None:
    """Ray reads RAY_AUTH_MODE into its configuration, and the token, once per process: read both again
    (a driver's server checks the calls made to it against the cached token)."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except Exception:  # noqa: BLE001 - Ray's private API changed: the environment variable still stands
        pass


def _token() -> str | None:
    """The token Ray would send: RAY_AUTH_TOKEN, the file RAY_AUTH_TOKEN_PATH names, or ~/.ray/auth_token."""
    if token := os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return token
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


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
