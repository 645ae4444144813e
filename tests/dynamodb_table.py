"""Build test tables from template.yaml's own `SessionsTable`: tests and infra cannot drift."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

TEMPLATE = Path(__file__).resolve().parents[1] / "template.yaml"


class _CloudFormationLoader(yaml.SafeLoader):
    """A safe loader that reads CloudFormation short forms (!Ref, !Sub, !If, !GetAtt, ...)."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    # The long forms: {"Ref": ...} and {"Condition": ...} have no Fn:: prefix.
    name = suffix if suffix in ("Ref", "Condition") else f"Fn::{suffix}"
    return {name: value}


_CloudFormationLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        document: dict[str, Any] = yaml.load(handle, Loader=_CloudFormationLoader)
    return document


def sessions_table_properties(path: Path = TEMPLATE) -> dict[str, Any]:
    """The `Properties` of the template's `SessionsTable` resource."""
    properties: dict[str, Any] = load_template(path)["Resources"]["SessionsTable"]["Properties"]
    return properties


def create_table_from_template(
    client: DynamoDBClient, table_name: str, path: Path = TEMPLATE
) -> None:
    """Create `table_name` with the template's KeySchema, AttributeDefinitions, BillingMode, TTL."""
    properties = sessions_table_properties(path)
    client.create_table(
        TableName=table_name,
        KeySchema=properties["KeySchema"],
        AttributeDefinitions=properties["AttributeDefinitions"],
        BillingMode=properties.get("BillingMode", "PROVISIONED"),
    )
    ttl = properties.get("TimeToLiveSpecification")
    if ttl:
        client.update_time_to_live(
            TableName=table_name,
            TimeToLiveSpecification={
                "AttributeName": ttl["AttributeName"],
                "Enabled": bool(ttl["Enabled"]),
            },
        )
