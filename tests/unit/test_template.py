"""template.yaml and samconfig.toml say exactly what streaming on Lambda needs.

cfn-lint and `sam validate --lint` check the shape of the template; they cannot know that
`response_stream` must be spelled that way, that the layer lives in account 753240598075, or
that every environment variable must be a Settings field. These tests pin those values.
"""

from __future__ import annotations

import re
import stat
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest

from core.settings import Settings
from tests.dynamodb_table import load_template

ROOT = Path(__file__).resolve().parents[2]
SAMCONFIG = ROOT / "samconfig.toml"
RUN_SH = ROOT / "src" / "run.sh"

NO_VALUE = {"Ref": "AWS::NoValue"}
LWA_ACCOUNT = "753240598075"
# The newest Lambda Web Adapter layer version checked when this was written; bump, never lower.
MIN_LWA_LAYER_VERSION = 30
# Environment variables that configure the platform rather than the app.
PLATFORM_ENV = {
    "AWS_LAMBDA_EXEC_WRAPPER",
    "AWS_LWA_INVOKE_MODE",
    "AWS_LWA_READINESS_CHECK_PATH",
    "AWS_LWA_PORT",
    "POWERTOOLS_SERVICE_NAME",
    "POWERTOOLS_METRICS_NAMESPACE",
}


def if_(condition: str, then: Any, otherwise: Any) -> dict[str, Any]:
    return {"Fn::If": [condition, then, otherwise]}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture(scope="module")
def function(template: dict[str, Any]) -> dict[str, Any]:
    resource = template["Resources"]["ChatFunction"]
    assert resource["Type"] == "AWS::Serverless::Function"
    props: dict[str, Any] = resource["Properties"]
    return props


@pytest.fixture(scope="module")
def env(function: dict[str, Any]) -> dict[str, Any]:
    variables: dict[str, Any] = function["Environment"]["Variables"]
    return variables


@pytest.fixture(scope="module")
def samconfig() -> dict[str, Any]:
    return tomllib.loads(SAMCONFIG.read_text(encoding="utf-8"))


# --- streaming: the values the linters cannot check ---------------------------------------


def test_streaming_is_a_parameter_defaulting_to_true(template: dict[str, Any]) -> None:
    assert template["Parameters"]["Streaming"]["Default"] == "true"
    assert template["Parameters"]["Streaming"]["AllowedValues"] == ["true", "false"]
    assert template["Conditions"]["IsStreaming"] == {"Fn::Equals": [{"Ref": "Streaming"}, "true"]}


def test_function_runs_python_3_13_from_src(function: dict[str, Any]) -> None:
    assert function["Runtime"] == "python3.13"
    assert function["CodeUri"] == "src/"


def test_handler_is_run_sh_when_streaming_and_mangum_otherwise(function: dict[str, Any]) -> None:
    assert function["Handler"] == if_("IsStreaming", "run.sh", "handlers.app.handler")


def test_function_url_streams_only_in_streaming_mode(function: dict[str, Any]) -> None:
    url = function["FunctionUrlConfig"]
    assert url["AuthType"] == "NONE"
    assert url["InvokeMode"] == if_("IsStreaming", "RESPONSE_STREAM", "BUFFERED")


def test_adapter_environment_is_exact_and_only_when_streaming(env: dict[str, Any]) -> None:
    assert env["AWS_LAMBDA_EXEC_WRAPPER"] == if_("IsStreaming", "/opt/bootstrap", NO_VALUE)
    assert env["AWS_LWA_INVOKE_MODE"] == if_("IsStreaming", "response_stream", NO_VALUE)
    assert env["AWS_LWA_READINESS_CHECK_PATH"] == if_("IsStreaming", "/healthz", NO_VALUE)
    assert env["AWS_LWA_PORT"] == if_("IsStreaming", "8080", NO_VALUE)


def test_one_adapter_layer_for_the_one_architecture(template: dict[str, Any]) -> None:
    params = template["Parameters"]
    assert int(params["LwaLayerVersion"]["Default"]) >= MIN_LWA_LAYER_VERSION
    function = template["Resources"]["ChatFunction"]["Properties"]
    (arch,) = function["Architectures"]
    layer = {"arm64": "LambdaAdapterLayerArm64", "x86_64": "LambdaAdapterLayerX86"}[arch]
    prefix = f"arn:aws:lambda:${{AWS::Region}}:{LWA_ACCOUNT}:layer:"
    # The If inside the list: `sam local invoke` skips it; an If around the list breaks it.
    assert function["Layers"] == [
        if_("IsStreaming", {"Fn::Sub": f"{prefix}{layer}:${{LwaLayerVersion}}"}, NO_VALUE)
    ]


def test_the_artifact_is_built_by_src_makefile(template: dict[str, Any]) -> None:
    assert template["Resources"]["ChatFunction"]["Metadata"] == {"BuildMethod": "makefile"}
    assert "build-ChatFunction:" in (ROOT / "src" / "Makefile").read_text(encoding="utf-8")


def test_architecture_is_chosen_once_so_build_and_deploy_cannot_differ(
    template: dict[str, Any], samconfig: dict[str, Any]
) -> None:
    """One literal in template.yaml: src/Makefile builds for it and the deploy runs on it.

    No parameter exists that `sam build` and `sam deploy` could each read differently (an
    `Architecture=...` override is an unknown parameter, which CloudFormation refuses), no
    samconfig section and no make target passes one, and the environment cannot steer the
    build (`ARCH=x86_64 sam build` still builds for the template's CPU).
    """
    assert "Architecture" not in template["Parameters"]
    function = template["Resources"]["ChatFunction"]["Properties"]
    assert function["Architectures"] in (["arm64"], ["x86_64"])
    assert "Architecture" not in SAMCONFIG.read_text(encoding="utf-8")
    assert "Architecture" not in (ROOT / "Makefile").read_text(encoding="utf-8")
    for environment in (
        {},
        {"ARCH": "x86_64" if function["Architectures"] == ["arm64"] else "arm64"},
    ):
        built_for = subprocess.run(
            ["make", "--no-print-directory", "-s", "-f", "Makefile", "print-arch"],
            cwd=ROOT / "src",
            env={"PATH": "/usr/bin:/bin", **environment},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert [built_for] == function["Architectures"], environment


def test_run_sh_is_executable_and_serves_on_the_adapter_port() -> None:
    assert RUN_SH.read_bytes().startswith(b"#!/bin/bash\n")
    assert b"\r" not in RUN_SH.read_bytes(), "CRLF line endings break the script on Lambda"
    assert RUN_SH.stat().st_mode & stat.S_IXUSR, "run.sh must be executable"
    text = RUN_SH.read_text(encoding="utf-8")
    # handlers.serve runs uvicorn on HOST:PORT; the simulator's URL is built from PORT too.
    assert 'export PORT="${AWS_LWA_PORT:-${PORT:-8080}}"' in text
    assert re.search(r"^exec python -m handlers\.serve$", text, re.MULTILINE)


def test_git_records_run_sh_as_executable() -> None:
    """sam build copies the mode git checked out: a 100644 run.sh fails on Lambda."""
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(
        ["git", "ls-files", "--stage", "src/run.sh"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.startswith("100755 "), f"git records run.sh as {out!r}; git update-index --chmod=+x"


# --- environment == Settings ----------------------------------------------------------------


def test_environment_names_are_settings_fields(env: dict[str, Any]) -> None:
    settings_names = {name.upper() for name in Settings.model_fields}
    unknown = set(env) - settings_names - PLATFORM_ENV
    assert not unknown, f"not Settings fields: {sorted(unknown)}"


def test_no_secret_or_cors_in_the_environment(env: dict[str, Any]) -> None:
    # The key comes from Secrets Manager; CORS lives only in the Function URL's Cors config.
    for name in ("OPENAI_API_KEY", "ACCESS_KEY", "CORS_ALLOW_ORIGINS"):
        assert name not in env
    assert env["OPENAI_API_KEY_SECRET"] == if_(
        "HasApiKeySecret", {"Ref": "OpenAIApiKeySecretArn"}, NO_VALUE
    )


def test_sessions_live_in_the_stack_table(env: dict[str, Any]) -> None:
    assert env["SESSION_STORE"] == "dynamodb"
    assert env["SESSIONS_TABLE"] == {"Ref": "SessionsTable"}


def _resolve_defaults(template: dict[str, Any], env: dict[str, Any]) -> dict[str, str]:
    """The app's environment under the template's parameter defaults (plain Refs only)."""
    params = template["Parameters"]
    resolved: dict[str, str] = {}
    for name, value in env.items():
        if isinstance(value, str):
            resolved[name] = value
        elif isinstance(value, dict) and value.get("Ref") in params:
            resolved[name] = str(params[value["Ref"]]["Default"])
    return resolved


def test_parameter_defaults_are_the_settings_defaults(
    template: dict[str, Any], env: dict[str, Any]
) -> None:
    """One set of defaults: a deployed stack behaves like `make serve` unless told otherwise."""
    fields = Settings.model_fields
    mirrored = {
        name: value
        for name, value in _resolve_defaults(template, env).items()
        if name.lower() in fields and name != "SESSION_STORE"  # deliberately dynamodb on Lambda
    }
    assert len(mirrored) >= 10, f"too few app settings resolved: {sorted(mirrored)}"
    for name, value in mirrored.items():
        expected = fields[name.lower()].default
        assert type(expected)(value) == expected, f"{name}: template {value!r} != {expected!r}"


def test_parameter_defaults_are_valid_settings(
    template: dict[str, Any], env: dict[str, Any]
) -> None:
    resolved = {k.lower(): v for k, v in _resolve_defaults(template, env).items()}
    app_fields = {k: v for k, v in resolved.items() if k in Settings.model_fields}
    settings = Settings(**app_fields)
    assert settings.session_store == "dynamodb"


# --- data and permissions -------------------------------------------------------------------


def test_sessions_table_matches_the_data_model(template: dict[str, Any]) -> None:
    table = template["Resources"]["SessionsTable"]
    assert table["Type"] == "AWS::DynamoDB::Table"
    props = table["Properties"]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert props["AttributeDefinitions"] == [
        {"AttributeName": "pk", "AttributeType": "S"},
        {"AttributeName": "sk", "AttributeType": "S"},
    ]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"] == {"SSEEnabled": True}
    assert "TableName" not in props, "a fixed name would stop two stacks sharing an account"


def test_policies_are_scoped_to_the_table_and_the_two_secrets(function: dict[str, Any]) -> None:
    assert function["Policies"] == [
        {"DynamoDBCrudPolicy": {"TableName": {"Ref": "SessionsTable"}}},
        if_(
            "HasApiKeySecret",
            {
                "AWSSecretsManagerGetSecretValuePolicy": {
                    "SecretArn": {"Ref": "OpenAIApiKeySecretArn"}
                }
            },
            NO_VALUE,
        ),
        if_(
            "HasAccessKeySecret",
            {"AWSSecretsManagerGetSecretValuePolicy": {"SecretArn": {"Ref": "AccessKeySecretArn"}}},
            NO_VALUE,
        ),
    ]


def test_api_key_secret_parameter_is_an_arn_or_empty(template: dict[str, Any]) -> None:
    param = template["Parameters"]["OpenAIApiKeySecretArn"]
    assert param["Default"] == ""
    pattern = re.compile(param["AllowedPattern"])
    assert pattern.fullmatch("")
    assert pattern.fullmatch("arn:aws:secretsmanager:eu-west-1:123456789012:secret:openai-AbCdEf")
    assert not pattern.fullmatch("sk-proj-plaintext-key")


def test_cors_is_exact_origins_from_a_parameter(
    template: dict[str, Any], function: dict[str, Any]
) -> None:
    cors = function["FunctionUrlConfig"]["Cors"]
    assert cors["Fn::If"][0] == "HasAllowedOrigins"
    assert cors["Fn::If"][2] == NO_VALUE
    config = cors["Fn::If"][1]
    assert config["AllowOrigins"] == {"Ref": "AllowedOrigins"}
    assert config["AllowMethods"] == ["GET", "POST", "DELETE"]
    assert config["AllowHeaders"] == ["content-type", "authorization"]
    assert isinstance(config["MaxAge"], int) and config["MaxAge"] > 0
    assert template["Parameters"]["AllowedOrigins"]["Type"] == "CommaDelimitedList"
    assertion = template["Rules"]["NoWildcardOrigin"]["Assertions"][0]["Assert"]
    assert assertion == {"Fn::Not": [{"Fn::Contains": [{"Ref": "AllowedOrigins"}, "*"]}]}


def test_cost_ceiling_parameters_reach_the_function(function: dict[str, Any]) -> None:
    assert function["Timeout"] == {"Ref": "Timeout"}
    assert function["MemorySize"] == {"Ref": "MemorySize"}
    assert function["ReservedConcurrentExecutions"] == if_(
        "HasReservedConcurrency", {"Ref": "ReservedConcurrency"}, NO_VALUE
    )


def test_function_timeout_outlasts_a_turn(template: dict[str, Any]) -> None:
    params = template["Parameters"]
    assert int(params["Timeout"]["Default"]) > int(params["TurnTimeoutSeconds"]["Default"])


def test_outputs(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]
    assert outputs["ChatUrl"]["Value"] == {"Fn::GetAtt": "ChatFunctionUrl.FunctionUrl"}
    assert outputs["SessionsTableName"]["Value"] == {"Ref": "SessionsTable"}


# --- samconfig.toml -------------------------------------------------------------------------


def _overrides(section: dict[str, Any]) -> dict[str, str]:
    raw = section["deploy"]["parameters"]["parameter_overrides"]
    items = raw if isinstance(raw, list) else raw.split()
    return dict(item.split("=", 1) for item in items)


def test_samconfig_defaults(samconfig: dict[str, Any]) -> None:
    assert samconfig["version"] == 0.1
    for env_name in ("default", "prod"):
        section = samconfig[env_name]
        assert section["build"]["parameters"] == {"cached": True, "parallel": True}
        assert section["validate"]["parameters"]["lint"] is True
        deploy = section["deploy"]["parameters"]
        assert deploy["capabilities"] == "CAPABILITY_IAM"
        assert deploy["resolve_s3"] is True
        assert deploy["confirm_changeset"] is True
    stacks = {samconfig[e]["global"]["parameters"]["stack_name"] for e in ("default", "prod")}
    assert len(stacks) == 2, "prod must not deploy over the dev stack"


def test_samconfig_overrides_name_real_parameters(
    samconfig: dict[str, Any], template: dict[str, Any]
) -> None:
    params = set(template["Parameters"])
    for env_name in ("default", "prod"):
        assert set(_overrides(samconfig[env_name])) <= params, env_name
    local = samconfig["default"]["local_invoke"]["parameters"]
    assert dict(i.split("=", 1) for i in local["parameter_overrides"]) == {"Streaming": "false"}
    assert (ROOT / local["env_vars"]).is_file()


def test_prod_has_exact_origins_and_a_concurrency_ceiling(samconfig: dict[str, Any]) -> None:
    for env_name in ("default", "prod"):
        assert not any("*" in v for v in _overrides(samconfig[env_name]).values()), env_name
    prod = _overrides(samconfig["prod"])
    origins = prod["AllowedOrigins"].split(",")
    assert origins and all(re.fullmatch(r"https://[a-z0-9.-]+(:\d+)?", o) for o in origins)
    assert prod["Streaming"] == "true"
    assert int(prod["ReservedConcurrency"]) > 0
    assert prod["OpenAIApiKeySecretArn"].startswith("arn:aws:secretsmanager:")
