"""Token authentication: every process of a Ray cluster, drivers included, must use the cluster's
mode (RAY_AUTH_MODE).

A driver in token mode on a cluster without it connects, but then refuses the calls the cluster makes
to it (they carry no token): the GCS takes a refused call about an actor's references for "all
references removed" and destroys the actor before it starts. A driver without the token on a cluster
that uses it only times out, as "Failed to connect". Ray reads the mode once per process: a private
instance puts this process in token mode (ray.init does), and a later connection would inherit it.
So before connecting, the head's GCS is asked once without a token: refused means token mode,
answered means none. The process is put in that mode (and the token at hand, if any, is tried the
same way, so that a wrong one fails at once), and put back after the run.
"""

from __future__ import annotations

import os
from pathlib import Path

from shufflenet_cli.errors import EngineError

AUTH_MODE = "RAY_AUTH_MODE"
TOKEN_HINT = (
    "if the cluster uses token authentication (Ray's default for new clusters), set RAY_AUTH_MODE=token "
    "and RAY_AUTH_TOKEN to its token (`ray get-auth-token` on the head node prints it)"
)
NO_TOKEN_HINT = (
    "set RAY_AUTH_TOKEN to the cluster's token (`ray get-auth-token` on the head node prints it), "
    "or put it in ~/.ray/auth_token"
)
# How long the head's GCS may take to answer the probe before the mode counts as unknown (ray.init
# then finds out for itself, and fails as it does).
PROBE_TIMEOUT_S = 10.0


def saved_mode() -> str | None:
    """RAY_AUTH_MODE as the run found it, for `restore`."""
    return os.environ.get(AUTH_MODE)


def restore(saved: str | None) -> None:
    """RAY_AUTH_MODE as it was, in the environment and in Ray's cached configuration."""
    if saved is None:
        os.environ.pop(AUTH_MODE, None)
    else:
        os.environ[AUTH_MODE] = saved
    reload()


def match_cluster(address: str, saved: str | None) -> None:
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
    reload()


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


def reload() -> None:
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
