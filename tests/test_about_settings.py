"""The settings reference users read: `target-omnisend --about` (markdown and JSON), the
plugin definition users add (`plugin/target-omnisend.yml`) and the one in meltano.yml.
Every setting the target accepts must be documented in all of them, with the same kind,
default and choices, and the API key must stay a secret everywhere. The two plugin files
are generated from the config schema; when they are older than it a test says which
command regenerates them."""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
import yaml

from target_omnisend import plugin_definition
from target_omnisend.config_schema import CONFIG_SCHEMA, OWN_SETTINGS
from target_omnisend.errors import ConfigError
from target_omnisend.settings import load_settings
from tests.harness import REPO, TARGET_BIN

REGENERATE = "run `make plugin-definition` (python -m target_omnisend.plugin_definition --write)"

#: meltano.yml `kind` that fits each JSON-schema type of the target's config schema.
KINDS = {
    "string": {"string", "password", "options", "file"},
    "integer": {"integer"},
    "number": {"decimal", "integer"},
    "boolean": {"boolean"},
    "array": {"array"},
    "object": {"object"},
}


def about(fmt: str) -> str:
    proc = subprocess.run(
        [str(TARGET_BIN), "--about", f"--format={fmt}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def about_json() -> dict[str, Any]:
    return json.loads(about("json"))


@pytest.fixture(scope="module")
def schema(about_json: dict[str, Any]) -> dict[str, Any]:
    return about_json["settings"]["properties"]


@pytest.fixture(scope="module", params=["meltano.yml", "plugin/target-omnisend.yml"])
def plugin(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The loader as this repository's meltano.yml declares it, and as users add it."""
    document = yaml.safe_load((REPO / request.param).read_text(encoding="utf-8"))
    if request.param != "meltano.yml":
        return document
    loaders = [p for p in document["plugins"]["loaders"] if p["name"] == "target-omnisend"]
    assert len(loaders) == 1
    return loaders[0]


def test_the_plugin_definition_file_is_generated_from_the_current_schema() -> None:
    text = (REPO / plugin_definition.HUB_FILE).read_text(encoding="utf-8")
    assert text == plugin_definition.render_hub_file(), (
        f"{plugin_definition.HUB_FILE} is stale: {REGENERATE}"
    )


def test_meltano_yml_loader_is_generated_from_the_current_schema() -> None:
    text = (REPO / plugin_definition.PROJECT_FILE).read_text(encoding="utf-8")
    assert text == plugin_definition.splice_project_file(text), (
        f"meltano.yml is stale: {REGENERATE}"
    )


def test_the_plugin_definition_has_what_meltano_hub_needs() -> None:
    hub = yaml.safe_load((REPO / plugin_definition.HUB_FILE).read_text(encoding="utf-8"))
    for key in ("name", "namespace", "variant", "pip_url", "executable", "capabilities"):
        assert hub[key], key
    for key in ("keywords", "settings", "settings_group_validation", "repo", "docs"):
        assert hub[key], key
    assert hub["settings_group_validation"] == [["api_key"]]
    # the PyPI distribution (with the PostgreSQL store's driver), not a checkout path
    assert hub["pip_url"] == "target-omnisend[postgres]"
    unlabelled = [s["name"] for s in hub["settings"] if not (s.get("label") and s.get("kind"))]
    assert unlabelled == []


@pytest.fixture(scope="module")
def meltano_settings(plugin: dict[str, Any]) -> dict[str, dict[str, Any]]:
    settings = plugin["settings"]
    names = [s["name"] for s in settings]
    assert len(names) == len(set(names)), "a setting is declared twice in meltano.yml"
    return {s["name"]: s for s in settings}


def _json_type(prop: dict[str, Any]) -> str:
    types = prop.get("type") or []
    types = [types] if isinstance(types, str) else types
    return next(t for t in types if t != "null")


def _undescribed(props: dict[str, Any], prefix: str = "") -> list[str]:
    """Settings (nested ones included) without a description."""
    missing = []
    for name, prop in props.items():
        if not str(prop.get("description") or "").strip():
            missing.append(prefix + name)
        missing += _undescribed(prop.get("properties") or {}, f"{prefix}{name}.")
    return missing


def test_about_json_is_complete(about_json: dict[str, Any], schema: dict[str, Any]) -> None:
    assert about_json["name"] == "target-omnisend"
    assert about_json["description"] and about_json["version"] and about_json["sdk_version"]
    assert about_json["settings"]["required"] == ["api_key"]
    assert _undescribed(schema) == []
    assert schema["api_key"]["secret"] is True and schema["api_key"]["writeOnly"] is True
    for capability in ("about", "stream-maps", "schema-flattening", "validate-records"):
        assert capability in about_json["capabilities"]


def test_about_markdown_lists_every_setting(
    about_json: dict[str, Any], schema: dict[str, Any]
) -> None:
    markdown = about("markdown")
    rows = {
        line.split("|")[1].strip(): line
        for line in markdown.splitlines()
        if line.startswith("| ") and line.count("|") >= 5
    }
    for name, prop in schema.items():
        assert name in rows, f"{name} missing from --about --format=markdown"
        assert prop["description"].split("\n")[0][:40] in rows[name]
    for name in schema["field_mapping"]["properties"]:
        assert f"field_mapping.{name}" in rows
    for capability in about_json["capabilities"]:
        assert f"- `{capability}`" in markdown
    assert "| api_key | True |" in markdown


def test_meltano_yml_declares_exactly_the_target_settings(
    schema: dict[str, Any], meltano_settings: dict[str, dict[str, Any]]
) -> None:
    missing = sorted(set(schema) - set(meltano_settings))
    assert missing == [], f"missing from the plugin definition: {REGENERATE}"
    assert sorted(set(meltano_settings) - set(schema)) == [], f"unknown to the target: {REGENERATE}"
    undescribed = [n for n, s in meltano_settings.items() if not s.get("description")]
    assert undescribed == []


def test_meltano_yml_kinds_defaults_and_choices_match_the_schema(
    schema: dict[str, Any], meltano_settings: dict[str, dict[str, Any]]
) -> None:
    for name, setting in meltano_settings.items():
        prop = schema[name]
        kind = setting.get("kind", "string")
        assert kind in KINDS[_json_type(prop)], f"{name}: kind {kind} for {prop['type']}"
        if "default" in prop:
            assert setting.get("value") == prop["default"], f"{name}: default differs"
        else:
            assert "value" not in setting, f"{name}: meltano.yml invents a default"
        if "enum" in prop:
            assert kind == "options", name
            assert sorted(o["value"] for o in setting["options"]) == sorted(prop["enum"]), name
        elif kind == "options":
            pytest.fail(f"{name}: options in meltano.yml, free value in the target")


def test_api_key_is_a_secret_in_meltano(
    plugin: dict[str, Any], meltano_settings: dict[str, dict[str, Any]]
) -> None:
    api_key = meltano_settings["api_key"]
    assert api_key["kind"] == "password"
    assert api_key["sensitive"] is True
    assert "value" not in api_key
    assert "api_key" not in (plugin.get("config") or {})
    secret_like = [
        n for n in meltano_settings if n.endswith(("_key", "secret", "token", "password"))
    ]
    assert secret_like == ["api_key", "fingerprint_store_password"]
    for name in secret_like:  # Meltano keeps them in .env, never in meltano.yml
        assert meltano_settings[name]["kind"] == "password"
        assert meltano_settings[name]["sensitive"] is True


def test_meltano_yml_capabilities_match_the_target(
    about_json: dict[str, Any], plugin: dict[str, Any]
) -> None:
    assert sorted(plugin["capabilities"]) == sorted(about_json["capabilities"])
    assert plugin["namespace"] == "target_omnisend"
    assert plugin["executable"] == "target-omnisend"


def _ours() -> dict[str, Any]:
    return {n: CONFIG_SCHEMA["properties"][n] for n in OWN_SETTINGS}


def test_load_settings_takes_every_default_from_the_schema() -> None:
    settings = load_settings({"api_key": "k"})
    checked = []
    for name, prop in _ours().items():
        if "default" not in prop:
            continue
        holder = settings if hasattr(settings, name) else settings.mapping
        if hasattr(holder, name):
            assert getattr(holder, name) == prop["default"], name
            checked.append(name)
    assert settings.generation.name == _ours()["api_version"]["default"]
    assert len(checked) >= 20, checked


@pytest.mark.parametrize(
    "name", [n for n, p in _ours().items() if "minimum" in p or "maximum" in p]
)
def test_load_settings_enforces_the_range_the_schema_declares(name: str) -> None:
    prop = _ours()[name]
    low, high = prop["minimum"], prop["maximum"]
    assert load_settings({"api_key": "k", name: low}) and load_settings(
        {"api_key": "k", name: high}
    )
    for bad in (low - 1, high + 1):
        with pytest.raises(ConfigError, match=f"^{name} must be a number from"):
            load_settings({"api_key": "k", name: bad})
    assert f"to {high:,}" in prop["description"] or f"to {high:g}" in prop["description"]


@pytest.mark.parametrize("name", [n for n, p in _ours().items() if "enum" in p])
def test_load_settings_accepts_exactly_the_schema_choices(name: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name} must be one of"):
        load_settings({"api_key": "k", name: "no-such-choice"})
    assert load_settings({"api_key": "k", name: _ours()[name]["default"]})
