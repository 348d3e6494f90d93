"""The driver's side of the cluster: connecting (embedded local Ray on 127.0.0.1, or an existing
cluster), checking an address before connecting, the cluster's nodes and trial slots, waiting for
capacity (and asking an autoscaler for it), and shutting down."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Any, Callable

import ray
import ray._private.ray_constants

from contract.plugins import PLUGINS_ENV, loaded_names, shipped_modules

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": a Ray of one node, on 127.0.0.1


class ClusterUnreachableError(ConnectionError):
    """``--address`` names a cluster that cannot be reached."""


_started_here = False  # whether connect() started or joined the Ray this process runs, so shutdown() ends it
_embedded_here = False  # whether that Ray is an embedded one (its processes are this process's children)


def connect(address: str | None, *, num_cpus: int | None = None) -> dict:
    """Start an embedded local Ray (``address=None``, bound to 127.0.0.1) or join a cluster. In a
    process that already runs Ray (a notebook's or a script's own ``ray.init``), the sweep uses that
    one and leaves it running (``shutdown``)."""
    global _started_here, _embedded_here
    if ray.is_initialized():
        running = ray.get_runtime_context().gcs_address
        if address is not None and address != running:
            # Ray allows one connection per process: joining another cluster would need ending the
            # caller's, with whatever it holds.
            raise ValueError(f"this process already runs Ray (at {running}), and a sweep in it uses that one: "
                             f"leave --address {address} out, or end it (ray.shutdown()) before the sweep")
        return ray.cluster_resources()
    kwargs: dict[str, Any] = dict(log_to_driver=True, configure_logging=False)
    if address is None:
        # Loopback only: Ray's processes otherwise bind to the machine's routable address, whatever
        # _node_ip_address says. Its children read the environment; this process read the constant
        # when it imported Ray.
        os.environ[LOOPBACK_ENV] = "0"
        ray._private.ray_constants.ENABLE_RAY_CLUSTER = False
        # Token authentication stays on (Ray's default); its notice that it is on is expected on
        # every laptop run and not shown. Its warning that authentication is *off* still is.
        _hide_message("ray._private.authentication.authentication_token_setup", "Token authentication is enabled")
        # "local": always a new instance of our own, never a Ray that happens to run on this machine.
        kwargs.update(address="local", _node_ip_address="127.0.0.1", num_cpus=num_cpus, include_dashboard=False)
    else:
        kwargs["address"] = address
        host = address.split("://")[-1].rsplit(":", 1)[0]
        if host in ("127.0.0.1", "localhost"):
            # A cluster on this machine's loopback (`ray start --head --node-ip-address 127.0.0.1`, a
            # rehearsal of the cluster loop): the driver must be reachable there too, and Ray must not
            # swap 127.0.0.1 for the machine's routable address.
            kwargs["_node_ip_address"] = "127.0.0.1"
            os.environ[LOOPBACK_ENV] = "0"
            ray._private.ray_constants.ENABLE_RAY_CLUSTER = False
            _use_local_token()
        check_address(address)
    if loaded_names():
        # The user's plugin modules: shipped to every node and imported by every worker process as it
        # starts, so trials and stage tasks find their entries by name (contract.plugins).
        kwargs["runtime_env"] = {"py_modules": shipped_modules(), "env_vars": {PLUGINS_ENV: ",".join(loaded_names())},
                                 "worker_process_setup_hook": "contract.plugins.load_from_env"}
    try:
        with _own_session(address is None):
            ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise ClusterUnreachableError(f"cannot reach the Ray cluster at {address!r}: {error}") from None
    _started_here, _embedded_here = True, address is None
    return ray.cluster_resources()


@contextlib.contextmanager
def _own_session(embedded: bool):
    """Start an embedded Ray's processes (GCS, raylet and, through the raylet, every worker) in a
    session of their own, away from the driver's process group.

    A stop signal sent to the driver's whole process group (``timeout``, ``kill -TERM -PGID``, a
    closed terminal's SIGHUP) would otherwise reach them too: Ray's workers and its GCS end on
    SIGTERM, and the driver, whose Tune loop needs them to stop the trials and save its state, could
    only wait for the lost GCS and exit without results. Ray already blocks SIGINT in them, for
    Ctrl-C, and gives them a process group of their own on Windows. The driver still owns them: it
    ends them at ``shutdown``, and the kernel ends them when the driver dies (fate sharing, which
    is why this is done only where Ray has it)."""
    from ray._private import services
    from ray._private.utils import detect_fate_sharing_support

    if not embedded or sys.platform == "win32" or not detect_fate_sharing_support():
        yield
        return

    original = services.ConsolePopen

    class _SessionPopen(original):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **{**kwargs, "start_new_session": True})

    services.ConsolePopen = _SessionPopen
    try:
        yield
    finally:
        services.ConsolePopen = original


def _use_local_token() -> None:
    """Authenticate with this machine's Ray token (``~/.ray/auth_token``) when there is one, as Ray
    does for ``--address auto``: a `ray start` on this machine turned token authentication on with it.
    Ray never sends it to an explicit address; a loopback one is this machine, so the token stays here."""
    from ray._private.authentication import authentication_token_setup as tokens

    _hide_message(tokens.__name__, "Token authentication is enabled")
    tokens.maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def _hide_message(logger: str, prefix: str) -> None:
    import logging

    class _Hide(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not str(record.getMessage()).startswith(prefix)

    target = logging.getLogger(logger)
    if not any(getattr(f, "prefix", None) == prefix for f in target.filters):
        hide = _Hide()
        hide.prefix = prefix
        target.addFilter(hide)


RAY_CLIENT_SCHEME = "ray://"
# The client's half of an HTTP/2 handshake: the connection preface and an empty SETTINGS frame. A
# Ray head's GCS is a gRPC server and answers with a SETTINGS frame of its own; anything else on the
# port (a web server, another service) answers otherwise or not at all.
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_HTTP2_SETTINGS = 0x4


def check_address(address: str | None, timeout_s: float = 5.0) -> None:
    """Refuse, in seconds and before any compute, a ``--address`` that cannot be a Ray cluster the
    driver can join (``ClusterUnreachableError``): a Ray Client (``ray://``) address, a ``host:port``
    nothing listens on, or one whose listener does not answer the GCS's gRPC (HTTP/2) handshake.
    ``auto`` and None (an embedded Ray) are left to Ray."""
    if address is None or address == "auto":
        return
    if address.startswith(RAY_CLIENT_SCHEME):
        raise ClusterUnreachableError(
            f"--address {address!r} is a Ray Client address, which a sweep cannot use: Tune's driver must run on the "
            "cluster itself. Run the sweep on the head node with --address auto (`ray exec cluster.yaml "
            "'python -m sweep.run ... --address auto'`, or `ray job submit --address http://HEAD:8265 -- python -m "
            "sweep.run ... --address auto`), or give the GCS address HEAD:6379 from a machine inside the cluster's network")
    if "://" in address or ":" not in address:
        return
    host, port = address.rsplit(":", 1)
    import socket

    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s) as connection:
            connection.settimeout(timeout_s)
            connection.sendall(_HTTP2_PREFACE)
            answer = _receive(connection, 9, timeout_s)
    except (OSError, ValueError) as error:
        raise ClusterUnreachableError(
            f"cannot reach the Ray cluster at {address!r}: {error}. Is the head node running (`ray status` on it), "
            "and is the address the one `ray start --head` printed?"
        ) from None
    if len(answer) < 9 or answer[3] != _HTTP2_SETTINGS:
        heard = answer[:40].decode("ascii", "replace").split("\n")[0].strip() or "nothing"
        raise ClusterUnreachableError(
            f"cannot reach the Ray cluster at {address!r}: something listens there but does not answer as a Ray head "
            f"(no gRPC handshake within {timeout_s:g} s; it answered {heard!r}). Give the GCS address that `ray start "
            "--head` printed (HEAD:6379 by default), not the dashboard's or another service's port"
        )


def _receive(connection, size: int, timeout_s: float) -> bytes:
    """Up to ``size`` bytes, whatever arrives within ``timeout_s`` (a closed or silent peer: fewer)."""
    import socket
    import time

    data, deadline = b"", time.monotonic() + timeout_s
    while len(data) < size and time.monotonic() < deadline:
        try:
            chunk = connection.recv(size - len(data))
        except (socket.timeout, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
    return data


def wait_for_killed_driver(pid: int, timeout_s: float = 60.0, poll_s: float = 0.5) -> int:
    """Wait until the Ray job of a driver that was killed (``pid``, from its stale lock) has no actor
    left alive on the connected cluster; returns how many were alive at first (0: nothing to wait for).

    On a cluster a trial's actor outlives a ``kill -9`` of its driver for a moment, and may still
    write a checkpoint (deleting the one before it) into the experiment the resume is about to
    restore. A resume waits for them, at most ``timeout_s`` seconds."""
    import time

    from ray._private import state

    def alive() -> int:
        count = 0
        for job in state.jobs():
            if job.get("DriverPid") == pid:
                count += len(state.actors(job_id=ray.JobID.from_hex(job["JobID"]), actor_state_name="ALIVE") or {})
        return count

    first = alive()
    deadline = time.monotonic() + timeout_s
    while alive() and time.monotonic() < deadline:
        time.sleep(poll_s)
    return first


def alive_nodes() -> int:
    return sum(1 for node in ray.nodes() if node.get("Alive"))


def trial_slots(cpus: float, gpus: float) -> int:
    """How many trials asking for ``cpus`` and ``gpus`` the alive nodes can run at once."""
    total = 0
    for node in (n["Resources"] for n in ray.nodes() if n.get("Alive")):
        fits = [int(node.get(name, 0.0) / amount + 1e-9) for name, amount in (("CPU", cpus), ("GPU", gpus)) if amount > 0]
        total += min(fits) if fits else 0
    return total


def unfit_resources(cpus: float, gpus: float) -> str | None:
    """Why no node of the connected cluster can run a trial asking for ``cpus`` and ``gpus``, or None."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    if any(node.get("CPU", 0) >= cpus and node.get("GPU", 0) >= gpus for node in nodes):
        return None
    largest = ", ".join(f"{n.get('CPU', 0):g} CPU / {n.get('GPU', 0):g} GPU" for n in nodes) or "no nodes"
    return f"a trial asks for {cpus:g} CPU and {gpus:g} GPU, but the nodes have {largest}"


def wait_for_fit(cpus: float, gpus: float, timeout_s: float, *, poll_s: float = 2.0,
                 on_poll: Callable[[float, str], None] | None = None) -> str | None:
    """Wait up to ``timeout_s`` for a node that fits a trial (``unfit_resources`` is None); returns
    None once one is alive, else why none fits at the deadline.

    An autoscaler adds nodes for demand only, and before the sweep there is none (the head runs no
    work): while waiting, the bundle of one trial is asked for (``request_resources``), so the
    autoscaler launches a node type that holds it; the request is withdrawn afterwards, and the
    sweep's own tasks and trials keep the nodes busy. On a cluster without an autoscaler the
    request is a no-op. ``on_poll(elapsed_s, why)`` sees every poll that still finds no fit."""
    import time

    from ray.autoscaler.sdk import request_resources

    unfit = unfit_resources(cpus, gpus)
    if unfit is None:
        return None
    bundle = {name: amount for name, amount in (("CPU", cpus), ("GPU", gpus)) if amount > 0}
    start = time.monotonic()
    try:
        if bundle:
            request_resources(bundles=[bundle])
        while unfit is not None and time.monotonic() - start < timeout_s:
            time.sleep(max(0.0, min(poll_s, timeout_s - (time.monotonic() - start))))
            unfit = unfit_resources(cpus, gpus)
            if unfit is not None and on_poll is not None:
                on_poll(time.monotonic() - start, unfit)
    finally:
        if bundle:
            request_resources(bundles=[])
    return unfit


def keep_running() -> None:
    """Hand the Ray that ``connect`` started to the caller: later sweeps in this process use it and
    leave it running (a test session's, or a notebook's that wants the loopback binding)."""
    global _started_here, _embedded_here
    _started_here = _embedded_here = False


# Without these no Ray call returns: the driver's next one waits a minute for the GCS, then ends the process.
CORE_PROCESSES = (ray._private.ray_constants.PROCESS_TYPE_GCS_SERVER, ray._private.ray_constants.PROCESS_TYPE_RAYLET)


def runs_embedded_ray() -> bool:
    """Whether this process started an embedded Ray (``connect``) whose processes ``embedded_ray_ended`` sees."""
    return _embedded_here and ray.is_initialized()


def embedded_ray_ended() -> list[str]:
    """The processes of the embedded Ray that ``connect`` started which have ended while the driver
    still uses them (their kinds: "raylet", "gcs_server", "dashboard", "log_monitor", ...): a stop
    signal sent to every process of the job (systemd stopping a unit, a batch scheduler cancelling a
    job; the driver's own session does not shield them from that) or the out-of-memory killer. The
    dashboard and the log monitor end at once on SIGTERM; the raylet first waits up to ten seconds
    for its busy workers. Empty while they run, and for a Ray this process did not start (a
    cluster's, a notebook's)."""
    if not runs_embedded_ray():
        return []
    node = ray._private.worker._global_node
    try:
        dead = node.dead_processes() if node is not None else []
    except RuntimeError:  # its table changed under this thread: Ray is being shut down by the driver itself
        return []
    return sorted({kind for kind, _ in dead})


def shutdown() -> None:
    """End the Ray connection that ``connect`` made (an embedded Ray stops with it: no trial process
    is left to write); a Ray the caller started before the sweep stays up, with its processes."""
    global _started_here, _embedded_here
    if _started_here and ray.is_initialized():
        node = ray._private.worker._global_node  # what ends Ray's processes (none when joined to a cluster)
        if node is not None:
            # Ray disconnects the driver, then takes a second to end its processes: the driver's
            # handlers go back in between, so a signal in that second is handled too.
            end_processes = node.kill_all_processes

            def end_processes_handled(*args, **kwargs):
                _reinstall_signal_handlers()
                return end_processes(*args, **kwargs)

            node.kill_all_processes = end_processes_handled
        ray.shutdown()
        _reinstall_signal_handlers()
    _started_here = _embedded_here = False


def _reinstall_signal_handlers() -> None:
    """Ray's core worker, as the driver disconnects, puts the kernel's default action for SIGTERM
    back (death, with the experiment's lock left behind) while Python's table still names the
    driver's handler: install that handler again."""
    if threading.current_thread() is not threading.main_thread():
        return
    for name in ("SIGTERM", "SIGHUP", "SIGINT"):
        signum = getattr(signal, name, None)
        handler = signal.getsignal(signum) if signum is not None else None
        if handler is not None:
            signal.signal(signum, handler)


def cluster_gpus() -> float:
    return float(ray.cluster_resources().get("GPU", 0))

