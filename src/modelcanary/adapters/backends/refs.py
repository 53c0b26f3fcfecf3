"""One backend per kind of model ref: the gateway loads every model through this, and each ref goes
to the backend for its kind (``registry``, ``v2``, ``ray``). An unknown kind raises with the known ones.

>>> from modelcanary.adapters.testing import FakeBackend
>>> RefBackend({"registry": FakeBackend({})}).load(ModelVersion(name="m", version="", ref="ray://app/m"))
Traceback (most recent call last):
...
modelcanary.domain.errors.BackendError: no backend for ray models (ray://app/m); this gateway loads: registry
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelcanary.domain.errors import BackendError
from modelcanary.domain.refs import parse_model_ref
from modelcanary.domain.state import ModelVersion
from modelcanary.ports import Backend, Model

if TYPE_CHECKING:
    from modelcanary.adapters.backends.batching import BatchSettings


class RefBackend:
    def __init__(self, backends: dict[str, Backend]) -> None:
        self.backends = backends

    def load(self, version: ModelVersion) -> Model:
        try:
            kind, _parts = parse_model_ref(version.uri)
        except ValueError as exc:
            raise BackendError(str(exc)) from exc
        backend = self.backends.get(kind)
        if backend is None:
            known = ", ".join(sorted(self.backends))
            raise BackendError(f"no backend for {kind} models ({version.uri}); this gateway loads: {known}")
        return backend.load(version)

    async def aclose(self) -> None:
        """Close what the backends hold open (connection pools), once the gateway stops."""
        for backend in self.backends.values():
            aclose = getattr(backend, "aclose", None)
            if aclose is not None:
                await aclose()


def default_backend(registry_uri: str, *, batching: BatchSettings | None = None) -> RefBackend:
    """Models of the registry at ``registry_uri`` in process (batched, given ``batching``),
    ``v2+http(s)://`` refs forwarded, ``ray://`` refs through Ray Serve (each backend imports its
    client only when it loads a model)."""
    from modelcanary.adapters.backends.batching import BatchingBackend
    from modelcanary.adapters.backends.inprocess import InProcessBackend
    from modelcanary.adapters.backends.rayserve import RayServeBackend
    from modelcanary.adapters.backends.v2remote import V2RemoteBackend

    registry: Backend = InProcessBackend(registry_uri)
    if batching is not None:
        registry = BatchingBackend(registry, batching)
    return RefBackend({"registry": registry, "v2": V2RemoteBackend(), "ray": RayServeBackend()})
