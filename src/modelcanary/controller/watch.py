"""Registry-triggered rollouts: when an alias (``models:/fraud@challenger``) moves to a new version,
start a rollout of that version from a template spec.

What the watcher has seen is derived from the store, not kept beside it: a version counts as seen
when any rollout of the template's endpoint, in any phase, has it as its candidate. So a version
never starts twice, across restarts and with several watchers on one store (the store refuses a
second active rollout on an endpoint). A version that arrives while another rollout holds the
endpoint waits, and starts when that one ends, unless the alias moved on meanwhile. A version the
start gate refused (audited as ``rollout.refused``) is asked about again only every ``REASK_S``:
asked at every look, the gate would refuse and audit it every look; never asked again, it would not
start when what refused it (a change freeze, say) is over.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modelcanary.controller.operations import StartStore, start_rollout
from modelcanary.domain.errors import Conflict, PolicyDenied, SpecError
from modelcanary.domain.refs import parse_model_uri
from modelcanary.domain.spec import load_spec
from modelcanary.domain.state import ModelVersion, RolloutState
from modelcanary.ports import Registry

REASK_S = 600.0  # seconds before a version the start gate refused is asked about again

log = logging.getLogger("modelcanary.watch")


@dataclass(frozen=True)
class Check:
    """What one look at the alias found, and did."""

    version: ModelVersion
    started: RolloutState | None
    reason: str


@dataclass
class Watcher:
    """Watches ``models:/NAME@ALIAS``, NAME being the template's candidate model."""

    store: StartStore
    registry: Registry
    template: str  # the spec's YAML text
    alias: str | None = None  # default: the alias the template's candidate names
    source: str = "<template>"
    clock: Callable[[], float] = time.monotonic
    # version URI -> the start gate's denial, and when
    refused: dict[str, tuple[PolicyDenied, float]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        spec = load_spec(self.template, source=self.source)  # refuse a bad template before watching
        name, _, alias = parse_model_uri(spec.spec.candidate)
        alias = self.alias or alias
        if alias is None:
            raise SpecError(
                [("spec.candidate", f"{spec.spec.candidate} names a version; give --alias to watch")],
                source=self.source,
            )
        self.endpoint, self.model, self.alias = spec.spec.endpoint, name, alias

    @property
    def uri(self) -> str:
        return f"models:/{self.model}@{self.alias}"

    def check(self, *, actor: str) -> Check:
        """Resolve the alias once and start a rollout of its version if none has had it yet.
        ``RegistryError`` if the alias cannot be resolved; ``PolicyDenied`` when the start gate
        refuses a version, and a check that starts nothing until ``REASK_S`` later."""
        version = self.registry.resolve(self.uri)
        rollouts = self.store.list_rollouts(endpoints=[self.endpoint])
        for state in rollouts:
            if (state.candidate.name, state.candidate.version) == (version.name, version.version):
                return Check(version, None, f"{version.uri} already rolled out by {state.id} ({state.phase.value})")
        active = [state for state in rollouts if not state.phase.is_terminal()]
        if active:
            return Check(version, None, f"{version.uri} waits: {active[0].id} holds endpoint {self.endpoint}")
        text = _with_candidate(self.template, version)
        baseline = self.registry.resolve(load_spec(text, source=self.source).spec.baseline)
        if (baseline.name, baseline.version) == (version.name, version.version):
            return Check(version, None, f"{version.uri} is the baseline already")
        denied = self.refused.get(version.uri)
        if denied is not None and self.clock() < denied[1] + REASK_S:
            return Check(version, None, f"{self.uri}: {denied[0]}")  # in the words it was reported in
        try:
            state = start_rollout(self.store, self.registry, text, source=self.source, actor=actor)
        except Conflict as exc:  # another watcher or an operator started one meanwhile
            return Check(version, None, f"{version.uri} waits: {exc}")
        except PolicyDenied as exc:
            self.refused[version.uri] = (exc, self.clock())
            raise
        log.info("%s moved to %s: started %s", self.uri, version.uri, state.id)
        return Check(version, state, f"{self.uri} moved to {version.uri}: started {state.id}")


def _with_candidate(template: str, version: ModelVersion) -> str:
    """The template with its candidate pinned to ``version`` and the version in its name, comments kept
    (the pinned URI is what the rollout's saved spec shows)."""
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    document: Any = yaml.load(template)
    document["spec"]["candidate"] = version.uri
    metadata = document.setdefault("metadata", {})
    metadata["name"] = f"{metadata.get('name') or document['spec']['endpoint']}-v{version.version}"
    out = io.StringIO()
    yaml.dump(document, out)
    return out.getvalue()
