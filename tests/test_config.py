"""The configs, their schema and their documentation agree."""

from __future__ import annotations

import re

import pytest
import yaml

from conftest import REPO

SCHEMA = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
JSON_SCHEMA_WORDS = {
    "$schema", "type", "description", "default", "enum", "pattern", "items", "minItems",
    "maxItems", "uniqueItems", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "properties", "additionalProperties", "required", "const", "oneOf", "anyOf",
}  # fmt: skip


def _leaves(node, path=()):
    for key, sub in node.get("properties", {}).items():
        if sub.get("type") == "object" and "properties" in sub:
            yield from _leaves(sub, (*path, key))
        else:
            yield ".".join((*path, key))


def _nodes(node, path=()):
    yield path, node
    for key, sub in node.get("properties", {}).items():
        yield from _nodes(sub, (*path, key))


def test_every_config_key_is_documented_in_config_readme():
    rows = re.findall(r"^\| `([\w.]+)` \|", (REPO / "config/README.md").read_text(), re.M)
    documented = {k for k in rows if not k.endswith((".yaml", ".tsv"))}  # the file table
    missing = [k for k in _leaves(SCHEMA) if k not in documented]
    assert not missing, f"config keys without a row in config/README.md: {missing}"
    unknown = sorted(documented - set(_leaves(SCHEMA)))
    assert not unknown, f"config/README.md documents keys the schema does not have: {unknown}"


def test_schema_uses_only_json_schema_keywords():
    """A comma in an unquoted YAML flow mapping splits a description into stray keys."""
    for path, node in _nodes(SCHEMA):
        stray = set(node) - JSON_SCHEMA_WORDS
        assert not stray, f"{'.'.join(path) or 'schema'}: not JSON-schema keywords {stray}"


def test_every_object_rejects_unknown_keys():
    for path, node in _nodes(SCHEMA):
        if node.get("type") == "object":
            assert node.get("additionalProperties") is False, ".".join(path)


@pytest.mark.parametrize(
    "name", ["config.yaml", "ukb.yaml", "site.yaml", "apply.yaml", "pretrained.yaml"]
)
def test_shipped_configs_are_yaml_mappings(name):
    assert isinstance(yaml.safe_load((REPO / "config" / name).read_text()), dict)


def test_the_study_config_holds_nothing_of_the_demo():
    study = yaml.safe_load((REPO / "config/ukb.yaml").read_text())
    assert "synthetic" not in study and "apply" not in study
    assert not any("synthetic" in str(v) for v in study["cohort"].values())


def test_workflow_catalog_file():
    usage = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert usage["software-stack-deployment"]["conda"] is True and usage["report"] is True
    assert "config/ukb.yaml" in usage["mandatory-flags"]["flags"]
