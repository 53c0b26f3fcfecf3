"""The MLflow registry adapter against a real registry in a temp dir."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from mlflow import MlflowClient

from modelcanary.adapters.registry.mlflow import MlflowRegistry
from modelcanary.domain.errors import RegistryError


def test_resolve_an_alias_and_a_version(registry: MlflowRegistry) -> None:
    champion = registry.resolve("models:/fraud@champion")
    challenger = registry.resolve("models:/fraud@challenger")
    assert (champion.name, champion.version) == ("fraud", "1")
    assert (challenger.name, challenger.version) == ("fraud", "2")
    assert registry.resolve("models:/fraud/1") == champion
    for version in (champion, challenger):
        assert version.run_id
        assert version.source
    assert champion.run_id != challenger.run_id
    assert champion.uri == "models:/fraud/1"


@pytest.mark.parametrize(
    "uri",
    ["models:/nosuchmodel@champion", "models:/fraud@nosuchalias", "models:/fraud/99", "models:/nosuchmodel/1"],
)
def test_unknown_model_alias_or_version_is_a_registry_error_naming_the_uri(registry: MlflowRegistry, uri: str) -> None:
    with pytest.raises(RegistryError) as caught:
        registry.resolve(uri)
    assert uri in str(caught.value)


def test_a_malformed_uri_is_a_registry_error(registry: MlflowRegistry) -> None:
    with pytest.raises(RegistryError, match="runs:/abc/model"):
        registry.resolve("runs:/abc/model")


def test_set_alias_moves_the_alias(registry: MlflowRegistry) -> None:
    alias = f"staging-{uuid.uuid4().hex[:6]}"  # a fresh alias: champion and challenger stay put for other tests
    registry.set_alias("fraud", alias, "1")
    assert registry.resolve(f"models:/fraud@{alias}").version == "1"
    registry.set_alias("fraud", alias, "2")
    registry.set_alias("fraud", alias, "2")  # idempotent
    assert registry.resolve(f"models:/fraud@{alias}").version == "2"
    assert registry.resolve("models:/fraud@champion").version == "1"
    registry.client.delete_registered_model_alias("fraud", alias)


def test_set_alias_on_an_unknown_version_is_a_registry_error(registry: MlflowRegistry) -> None:
    with pytest.raises(RegistryError, match="fraud@staging"):
        registry.set_alias("fraud", "staging", "99")


def test_set_tag_is_visible_through_mlflow(registry: MlflowRegistry, mlflow_registry: Any) -> None:
    key = f"modelcanary.test.{uuid.uuid4().hex[:6]}"
    registry.set_tag("fraud", "2", key, "rolled back: accuracy failed")
    client = MlflowClient(tracking_uri=mlflow_registry.uri, registry_uri=mlflow_registry.uri)
    assert client.get_model_version("fraud", "2").tags[key] == "rolled back: accuracy failed"
    assert key not in client.get_model_version("fraud", "1").tags


def test_set_tag_on_an_unknown_version_is_a_registry_error(registry: MlflowRegistry) -> None:
    with pytest.raises(RegistryError, match="fraud/99"):
        registry.set_tag("fraud", "99", "k", "v")
