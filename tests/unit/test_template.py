"""template.yaml and samconfig.toml say exactly what streaming on Lambda needs.

cfn-lint and `sam validate --lint` check the shape of the template; they cannot know that
`response_stream` must be spelled that way, that the layer lives in account 753240598075, or
that every environment variable must be a Settings field. These tests pin those values.
"""

from __future__ import annotations

import os
import re
import shutil
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
    assert function["Handler"] == if_("IsStreaming", "run.sh", "handlers.buffered.handler")


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
    for env_name, commands in samconfig.items():
        for command, section in commands.items() if isinstance(commands, dict) else ():
            raw = section["parameters"].get("parameter_overrides", [])
            items = raw if isinstance(raw, list) else raw.split()
            assert not [i for i in items if i.startswith("Architecture=")], (env_name, command)
    assert "Architecture=" not in (ROOT / "Makefile").read_text(encoding="utf-8")
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


def test_make_build_passes_no_architecture_to_the_build(
    tmp_path: Path, function: dict[str, Any]
) -> None:
    """`make build ARCH=...` (or any make variable) never reaches src/Makefile through sam.

    GNU make hands its command-line variables to every make below it (MAKEFLAGS), and sam
    runs src/Makefile with the environment it was given: a stand-in for sam runs
    src/Makefile exactly so and reports the CPU it would build for.
    """
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    tools = tmp_path / "tools" / "bin"
    tools.mkdir(parents=True)
    (tools / ".installed").touch()
    (tools / "uv").touch()
    sam = tmp_path / "sam"
    sam.write_text(
        '#!/bin/sh\nmake --no-print-directory -s -f src/Makefile print-arch > "$ARCH_SEEN"\n'
    )
    sam.chmod(0o755)
    seen = tmp_path / "arch"
    other = "x86_64" if function["Architectures"] == ["arm64"] else "arm64"
    run = subprocess.run(
        ["make", "-s", "build", f"ARCH={other}", f"TOOLS={tmp_path / 'tools'}", f"SAM={sam}"],
        cwd=ROOT,
        env=os.environ | {"ARCH_SEEN": str(seen)},
        capture_output=True,
        text=True,
        check=False,
    )
    if "sam build needs python3.13" in run.stdout + run.stderr:
        pytest.skip("python3.13 is not on PATH (make build checks it first)")
    assert run.returncode == 0, run.stdout + run.stderr
    assert [seen.read_text().strip()] == function["Architectures"]


def test_run_sh_is_executable_and_serves_on_the_adapter_port() -> None:
    assert RUN_SH.read_bytes().startswith(b"#!/bin/bash\n")
    assert b"\r" not in RUN_SH.read_bytes(), "CRLF line endings break the script on Lambda"
    assert RUN_SH.stat().st_mode & stat.S_IXUSR, "run.sh must be executable"
    text = RUN_SH.read_text(encoding="utf-8")
    # handlers.serve runs uvicorn on HOST:PORT.
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
    assert "TableName" not in props, "a fixed name would stop two stacks sharing an account"


def test_table_is_encrypted_with_the_aws_owned_key_unless_a_key_is_given(
    template: dict[str, Any],
) -> None:
    props = template["Resources"]["SessionsTable"]["Properties"]
    customer_key = {
        "SSEEnabled": True,
        "SSEType": "KMS",
        "KMSMasterKeyId": {"Ref": "TableKmsKeyArn"},
    }
    # SSEEnabled false is DynamoDB's AWS owned key; true without a key would be the AWS managed
    # key (aws/dynamodb), which is charged per request.
    assert props["SSESpecification"] == if_("HasTableKmsKey", customer_key, {"SSEEnabled": False})
    assert template["Parameters"]["TableKmsKeyArn"]["Default"] == ""
    assert template["Conditions"]["HasTableKmsKey"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "TableKmsKeyArn"}, ""]}]
    }


def test_recovery_and_deletion_protection_in_prod_only(
    template: dict[str, Any], samconfig: dict[str, Any]
) -> None:
    props = template["Resources"]["SessionsTable"]["Properties"]
    assert props["PointInTimeRecoverySpecification"] == {
        "PointInTimeRecoveryEnabled": if_("IsProd", True, False)
    }
    assert props["DeletionProtectionEnabled"] == if_("IsProd", True, False)
    assert template["Parameters"]["Environment"]["AllowedValues"] == ["dev", "prod"]
    assert template["Conditions"]["IsProd"] == {"Fn::Equals": [{"Ref": "Environment"}, "prod"]}
    assert _overrides(samconfig["default"])["Environment"] == "dev"
    assert _overrides(samconfig["prod"])["Environment"] == "prod"


# What the DynamoDB adapters call; TransactWriteItems is authorized as UpdateItem + PutItem.
STORE_ACTIONS = [
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:Query",
    "dynamodb:BatchWriteItem",
]


def test_store_calls_are_the_ones_the_policy_allows() -> None:
    """The policy below follows the code: a new boto3 call needs a new action."""
    adapters = ("sessions/dynamodb.py", "quota/dynamodb.py", "turns/dynamodb.py")
    source = "\n".join(
        (ROOT / "src" / "core" / name).read_text(encoding="utf-8") for name in adapters
    )
    calls = set(re.findall(r"\b(?:client|c)\.([a-z_]+)\(", source))
    assert calls == {
        "get_item",
        "put_item",
        "update_item",
        "delete_item",
        "query",
        "transact_write_items",
        "batch_write_item",
    }
    transacted = set(re.findall(r'"(Put|Update|Delete|ConditionCheck)": \{', source))
    assert transacted <= {"Put", "Update"}, "a new transaction part needs its IAM action"


def test_policies_are_scoped_to_the_table_and_the_two_secrets(function: dict[str, Any]) -> None:
    table_statement = {
        "Sid": "SessionsTable",
        "Effect": "Allow",
        "Action": STORE_ACTIONS,
        "Resource": {"Fn::GetAtt": "SessionsTable.Arn"},
    }
    kms_statement = {
        "Sid": "SecretsKey",
        "Effect": "Allow",
        "Action": "kms:Decrypt",
        "Resource": {"Ref": "SecretsKmsKeyArn"},
        "Condition": {
            "StringEquals": {
                "kms:ViaService": {"Fn::Sub": "secretsmanager.${AWS::Region}.amazonaws.com"}
            }
        },
    }
    assert function["Policies"] == [
        {"Statement": [table_statement]},
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
        if_("HasSecretsKmsKey", {"Statement": [kms_statement]}, NO_VALUE),
    ]
    for action in ("dynamodb:Scan", "dynamodb:BatchGetItem", "dynamodb:DescribeTable"):
        assert action not in str(function["Policies"])


def test_kms_decrypt_only_with_a_customer_key_and_a_secret(template: dict[str, Any]) -> None:
    assert template["Conditions"]["HasSecretsKmsKey"] == {
        "Fn::And": [
            {"Fn::Not": [{"Fn::Equals": [{"Ref": "SecretsKmsKeyArn"}, ""]}]},
            {"Fn::Or": [{"Condition": "HasApiKeySecret"}, {"Condition": "HasAccessKeySecret"}]},
        ]
    }


@pytest.mark.parametrize("name", ["OpenAIApiKeySecretArn", "AccessKeySecretArn"])
def test_secret_parameters_take_only_full_arns_or_nothing(
    template: dict[str, Any], name: str
) -> None:
    param = template["Parameters"][name]
    assert param["Default"] == ""
    pattern = re.compile(param["AllowedPattern"])
    assert pattern.fullmatch("")
    assert pattern.fullmatch("arn:aws:secretsmanager:eu-west-1:123456789012:secret:openai-AbCdEf")
    assert pattern.fullmatch(
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:sse-chat-agent/openai-api-key-AbCdEf"
    )
    # A partial ARN (no random suffix) matches any secret whose name starts with it in IAM.
    assert not pattern.fullmatch("arn:aws:secretsmanager:eu-west-1:123456789012:secret:openai")
    assert not pattern.fullmatch("sse-chat-agent/openai-api-key")
    assert not pattern.fullmatch("sk-proj-plaintext-key")


# --- rules: what CloudFormation refuses before creating anything ----------------------------


def _evaluate(node: Any, values: dict[str, Any]) -> Any:
    """The rule functions these Rules use: Ref, Equals, Not, Or, And, Contains."""
    if not isinstance(node, dict):
        return [_evaluate(n, values) for n in node] if isinstance(node, list) else node
    ((name, argument),) = node.items()
    if name == "Ref":
        return values[argument]
    args = _evaluate(argument, values)
    match name:
        case "Fn::Equals":
            return str(args[0]) == str(args[1])
        case "Fn::Not":
            return not args[0]
        case "Fn::Or":
            return any(args)
        case "Fn::And":
            return all(args)
        case "Fn::Contains":
            return args[1] in args[0]
    raise AssertionError(f"rule function not taught: {name}")


def _rules_refusing(template: dict[str, Any], **given: str) -> list[str]:
    """Names of the Rules that refuse a deploy with these parameters (defaults for the rest)."""
    values: dict[str, Any] = {
        name: p.get("Default", "") for name, p in template["Parameters"].items()
    }
    values |= {"AWS::Partition": "aws", "AWS::Region": "us-east-1"} | given
    values["AllowedOrigins"] = [o for o in str(values["AllowedOrigins"]).split(",") if o]
    refused = []
    for name, rule in template["Rules"].items():
        if "RuleCondition" in rule and not _evaluate(rule["RuleCondition"], values):
            continue
        if not all(_evaluate(a["Assert"], values) for a in rule["Assertions"]):
            refused.append(name)
    return refused


KEY = "arn:aws:secretsmanager:us-east-1:123456789012:secret:openai-AbCdEf"
ACCESS = "arn:aws:secretsmanager:us-east-1:123456789012:secret:access-AbCdEf"


def test_a_paid_model_on_the_public_url_needs_an_access_key_or_a_ceiling(
    template: dict[str, Any],
) -> None:
    assert _rules_refusing(template) == []  # the simulator: nothing to spend
    assert _rules_refusing(template, OpenAIApiKeySecretArn=KEY) == ["PaidModelNeedsAGuard"]
    assert _rules_refusing(template, OpenAIApiKeySecretArn=KEY, AccessKeySecretArn=ACCESS) == []
    assert _rules_refusing(template, OpenAIApiKeySecretArn=KEY, ReservedConcurrency="20") == []


def test_regions_without_the_adapter_layer_or_function_urls_are_refused(
    template: dict[str, Any],
) -> None:
    assert _rules_refusing(template, **{"AWS::Region": "eu-west-1"}) == []
    for region in ("il-central-1", "eu-central-2", "ap-southeast-4"):
        assert _rules_refusing(template, **{"AWS::Region": region}) == ["SupportedRegion"]
    for partition in ("aws-cn", "aws-us-gov"):
        assert _rules_refusing(template, **{"AWS::Partition": partition}) == ["SupportedRegion"]


def test_wildcard_origin_is_refused(template: dict[str, Any]) -> None:
    assert _rules_refusing(template, AllowedOrigins="https://a.example,*") == ["NoWildcardOrigin"]


def test_samconfig_environments_pass_the_rules(
    template: dict[str, Any], samconfig: dict[str, Any]
) -> None:
    for env_name in ("default", "prod"):
        assert _rules_refusing(template, **_overrides(samconfig[env_name])) == [], env_name


# --- alarms ---------------------------------------------------------------------------------


def test_alarms_on_throttles_errors_and_failed_turns(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    alarms = {
        r["Properties"]["MetricName"]: r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::CloudWatch::Alarm"
    }
    assert set(alarms) == {"Throttles", "Errors", "TurnsFailed"}
    function = [{"Name": "FunctionName", "Value": {"Ref": "ChatFunction"}}]
    assert alarms["Throttles"]["Namespace"] == alarms["Errors"]["Namespace"] == "AWS/Lambda"
    assert alarms["Throttles"]["Dimensions"] == alarms["Errors"]["Dimensions"] == function
    # Where handlers/telemetry.py's Powertools Metrics puts it.
    env = resources["ChatFunction"]["Properties"]["Environment"]["Variables"]
    assert alarms["TurnsFailed"]["Namespace"] == env["POWERTOOLS_METRICS_NAMESPACE"]
    assert alarms["TurnsFailed"]["Dimensions"] == [
        {"Name": "service", "Value": env["POWERTOOLS_SERVICE_NAME"]}
    ]
    for alarm in alarms.values():
        assert alarm["AlarmActions"] == if_("HasAlarmEmail", [{"Ref": "AlarmTopic"}], NO_VALUE)
        assert alarm["TreatMissingData"] == "notBreaching"
    topic = resources["AlarmTopic"]
    assert topic["Condition"] == "HasAlarmEmail"
    assert topic["Properties"]["Subscription"] == [
        {"Protocol": "email", "Endpoint": {"Ref": "AlarmEmail"}}
    ]


def test_metric_names_match_what_the_app_emits() -> None:
    source = (ROOT / "src" / "handlers" / "telemetry.py").read_text(encoding="utf-8")
    assert '"TurnsFailed"' in source
    assert 'SERVICE = "sse-chat-agent"' in source and 'NAMESPACE = "SseChatAgent"' in source


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
    assert config["ExposeHeaders"] == ["Retry-After"]  # a 429's wait, readable cross-origin
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
    assert _overrides(samconfig["default"])["LogLevel"] == "INFO"  # DEBUG: every library's too
    assert prod["OpenAIApiKeySecretArn"].startswith("arn:aws:secretsmanager:")
