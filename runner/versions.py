"""Config -> model name -> version -> adapter: the one place each is decided, for every command."""

from __future__ import annotations

from tuneline.config import TunelineConfig


class VersionNotFound(RuntimeError):
    """The config's model has no such version, or the version no adapter: the message says which."""


def model_name_of(config: TunelineConfig, zenml_config: dict) -> str:
    """The config's `model: name:`, or `tuneline-<task>`: one lineage per task when the user names none."""
    return (zenml_config.get("model") or {}).get("name") or f"tuneline-{config.data.task}"


def with_model_name(config: TunelineConfig, zenml_config: dict) -> dict:
    """The ZenML run config with `model: name:` filled in, so the run's model version is the one named above."""
    return {**zenml_config, "model": {**(zenml_config.get("model") or {}), "name": model_name_of(config, zenml_config)}}


def adapter_of(model_name: str, version: str) -> tuple[str, str]:
    """(version name, id of its `lora_adapter` artifact version) for a version number, name or stage."""
    from zenml.client import Client

    try:
        mv = Client().get_model_version(model_name, version)
    except KeyError:
        raise VersionNotFound(f"model '{model_name}' has no version '{version}'") from None
    adapter = mv.get_artifact("lora_adapter")
    if adapter is None:
        raise VersionNotFound(f"model '{model_name}' version {mv.name} has no 'lora_adapter' artifact")
    return mv.name, str(adapter.id)
