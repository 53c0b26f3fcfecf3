"""Models served by a Ray Serve deployment, named ``ray://APP/DEPLOYMENT`` (the optional extra
``modelcanary[ray]``). The gateway calls the deployment through a ``DeploymentHandle``: the
deployment's ``__call__`` receives the request's columns (a dict of equal-length lists) and returns
one output per row (a list, a numpy array or a DataFrame; numpy scalars become plain numbers:
``outputs.rows_of``).

The process joins the Ray cluster at ``RAY_ADDRESS`` (default ``auto``: the local one) unless Ray is
already initialised. Ray is imported only when such a model loads.
"""

from __future__ import annotations

import os
from typing import Any

from modelcanary.adapters.backends.outputs import rows_of
from modelcanary.domain.errors import BackendError
from modelcanary.domain.refs import parse_model_ref
from modelcanary.domain.state import ModelVersion
from modelcanary.ports import Column


def _failure(ref: str, exc: Exception, timeout_s: float) -> BackendError:
    """A short message: the deployment's own exception (a RayTaskError's cause), not Ray's traceback;
    for a timeout (a ``TimeoutError``: ``asyncio.wait_for``'s in ``apredict``), how long it was given.
    The caller raises it from ``exc``, so the gateway can tell a timeout (504) from a failure.

    >>> str(_failure("ray://app/m", TimeoutError(), 2.5))
    'ray://app/m: no answer within 2.5 s'
    >>> str(_failure("ray://app/m", ValueError("bad row"), 2.5))
    'ray://app/m: ValueError: bad row'
    """
    if isinstance(exc, TimeoutError):
        return BackendError(f"{ref}: no answer within {timeout_s:g} s")
    cause = getattr(exc, "cause", None) or exc
    return BackendError(f"{ref}: {type(cause).__name__}: {cause}")


class RayServeModel:
    columns: tuple[Column, ...] | None = None  # a deployment states no signature: the baseline's validates

    def __init__(self, handle: Any, ref: str, *, timeout_s: float) -> None:
        self._handle = handle
        self.ref = ref
        self.timeout_s = timeout_s

    def predict(self, columns: dict[str, list[Any]]) -> list[Any]:
        """The blocking call, for callers without an event loop (the gateway awaits ``apredict``)."""
        try:
            output = self._handle.remote(columns).result(timeout_s=self.timeout_s)
        except Exception as exc:  # Ray's errors (actor died, task error, timeout) have no common base
            raise _failure(self.ref, exc, self.timeout_s) from exc
        return rows_of(output, self.ref)

    async def apredict(self, columns: dict[str, list[Any]]) -> list[Any]:
        import asyncio

        try:
            output = await asyncio.wait_for(self._handle.remote(columns), self.timeout_s)
        except Exception as exc:  # as in predict; a timeout included
            raise _failure(self.ref, exc, self.timeout_s) from exc
        return rows_of(output, self.ref)


class RayServeBackend:
    def __init__(self, *, timeout_s: float = 30.0, address: str | None = None) -> None:
        self.timeout_s = timeout_s
        self.address = address

    def load(self, version: ModelVersion) -> RayServeModel:
        try:
            kind, parts = parse_model_ref(version.uri)
        except ValueError as exc:
            raise BackendError(str(exc)) from exc
        if kind != "ray":
            raise BackendError(f"{version.uri} is not a ray:// model ref")
        try:
            import ray
            from ray import serve
        except ImportError as exc:
            raise BackendError(f"{version.uri} needs Ray Serve: pip install 'modelcanary[ray]'") from exc
        try:
            if not ray.is_initialized():
                ray.init(address=self.address or os.environ.get("RAY_ADDRESS", "auto"), log_to_driver=False)
            handle = serve.get_deployment_handle(parts["deployment"], app_name=parts["app"])
        except Exception as exc:  # no cluster, no Serve, no such app or deployment
            raise BackendError(f"{version.uri}: {type(exc).__name__}: {exc}") from exc
        return RayServeModel(handle, version.uri, timeout_s=self.timeout_s)
