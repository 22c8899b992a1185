"""Deployed wiring, emulated in moto: template.yaml (bucket, rule, functions) and statemachine/batch.asl.json.

Flow under test: a synthetic lake is written to s3://<bucket>/data/<dataset>/ (the manifest last) -> S3 emits
an EventBridge "Object Created" event -> the template's rule pattern matches it -> the state machine runs
plan -> Distributed Map over the shards -> reduce, with every Lambda running the real ``handlers.batch``
handler in-process (conftest's shim).

Not emulated: moto's EventBridge cannot deliver to a Step Functions target (``send_to_targets`` implements
only SQS/Logs/bus/API destinations), so the rule here targets a probe SQS queue and the test starts the
execution with the captured event, the same input AWS would hand to StartExecution. IAM is not enforced.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from datasets import storage
from datasets.synthetic import SynthConfig, generate
from handlers import batch
from handlers.batch_local import run_local
from tests.template_yaml import load_template

REGION = "us-east-1"  # as in conftest.py
ACCOUNT = "123456789012"  # moto's default account
ROOT = Path(__file__).resolve().parents[2]
STACK = "measures"
FUNCTIONS = {
    "PlanFunction": "PlanFunctionArn",
    "ShardFunction": "ShardFunctionArn",
    "ReduceFunction": "ReduceFunctionArn",
}


def _load_template() -> dict[str, Any]:
    """template.yaml with ``!Sub`` resolved for this stack; other intrinsics kept as ``{"Tag": value}``."""
    doc = load_template(ROOT / "template.yaml")
    params = {
        "AWS::StackName": STACK,
        "AWS::AccountId": ACCOUNT,
        "AWS::Region": REGION,
        "AWS::Partition": "aws",
    }
    params |= {name: str(spec.get("Default", "")) for name, spec in doc["Parameters"].items()}

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {"Sub"} and isinstance(node["Sub"], str):
                return re.sub(r"\$\{([^}]+)\}", lambda m: params.get(m.group(1), m.group(0)), node["Sub"])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return resolve(doc)  # type: ignore[no-any-return]


TEMPLATE = _load_template()
RESOURCES = TEMPLATE["Resources"]
BUCKET = RESOURCES["DataBucket"]["Properties"]["BucketName"]
RESULTS_ROOT = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]["RESULTS_ROOT"]
PATTERN = RESOURCES["BatchStateMachine"]["Properties"]["Events"]["ManifestCreated"]["Properties"]["Pattern"]


def _clients() -> dict[str, Any]:
    import boto3

    return {
        name: boto3.client(name, region_name=REGION)
        for name in ("s3", "sqs", "events", "iam", "lambda", "stepfunctions")
    }


@pytest.fixture()
def stack(moto_server: Any, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A fresh moto account holding the template's bucket, rule, three functions and the state machine."""
    moto_server.reset()
    c = _clients()
    c["s3"].create_bucket(Bucket=BUCKET)
    c["s3"].put_bucket_notification_configuration(
        Bucket=BUCKET, NotificationConfiguration={"EventBridgeConfiguration": {}}
    )
    probe = c["sqs"].create_queue(QueueName="manifest-events-probe")["QueueUrl"]
    probe_arn = c["sqs"].get_queue_attributes(QueueUrl=probe, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    c["events"].put_rule(Name="manifest-created", EventPattern=json.dumps(PATTERN))
    c["events"].put_targets(Rule="manifest-created", Targets=[{"Id": "probe", "Arn": probe_arn}])
    role = c["iam"].create_role(RoleName="fn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    substitutions = {}
    for logical, key in FUNCTIONS.items():
        props = RESOURCES[logical]["Properties"]
        arn = c["lambda"].create_function(
            FunctionName=f"{STACK}-{logical}",
            Runtime=TEMPLATE["Globals"]["Function"]["Runtime"],
            Architectures=TEMPLATE["Globals"]["Function"]["Architectures"],
            Role=role,
            Handler=props["Handler"],  # the shim imports and calls exactly this
            Code={
                "ZipFile": b"PK\x05\x06" + b"\x00" * 18
            },  # never run: the shim calls the handler in-process
            MemorySize=props["MemorySize"] if isinstance(props["MemorySize"], int) else 4096,
            Timeout=props["Timeout"],
            Environment={"Variables": {"RESULTS_ROOT": RESULTS_ROOT}},
        )["FunctionArn"]
        substitutions[key] = arn
    definition = (ROOT / "statemachine" / "batch.asl.json").read_text()
    for key, value in substitutions.items():
        definition = definition.replace("${" + key + "}", value)
    assert "${" not in definition, "every DefinitionSubstitution must be provided by the template"
    assert set(substitutions) == set(RESOURCES["BatchStateMachine"]["Properties"]["DefinitionSubstitutions"])
    machine = c["stepfunctions"].create_state_machine(
        name=f"{STACK}-batch", definition=definition, roleArn=role, type="STANDARD"
    )["stateMachineArn"]
    # the shim shares this process' environment with the handlers (on AWS each function has its own)
    monkeypatch.setenv("RESULTS_ROOT", RESULTS_ROOT)
    monkeypatch.setattr(batch, "TARGET_PATIENTS_PER_SHARD", 100)  # 400 patients -> 4 shards, 4 map items
    return {"clients": c, "probe": probe, "machine": machine, "shim": moto_server.shim}


def _drop_lake(stack: dict[str, Any], name: str) -> tuple[str, dict[str, Any]]:
    """Write a lake under data/<name>/ and return the manifest event EventBridge matched for it."""
    data = f"s3://{BUCKET}/data/{name}"
    generate(data, SynthConfig(n_patients=400, n_buckets=8, seed=11))
    sqs = stack["clients"]["sqs"]
    messages = sqs.receive_message(QueueUrl=stack["probe"], MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
        "Messages", []
    )
    events = [json.loads(m["Body"]) for m in messages]
    assert len(events) == 1, f"exactly the manifest put matches the rule, got {events}"
    (event,) = events
    assert event["detail-type"] == "Object Created"
    assert event["detail"]["object"]["key"] == f"data/{name}/_manifest.json"
    return data, event


def _run(stack: dict[str, Any], event: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    sfn = stack["clients"]["stepfunctions"]
    name = f"manifest-{uuid.uuid4().hex}"  # EventBridge names every delivery uniquely (moto reuses "None")
    arn = sfn.start_execution(stateMachineArn=stack["machine"], name=name, input=json.dumps(event))[
        "executionArn"
    ]
    deadline = time.monotonic() + timeout
    while True:
        described = sfn.describe_execution(executionArn=arn)
        if described["status"] != "RUNNING":
            return described  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"execution still RUNNING after {timeout} s")
        time.sleep(0.1)


def _keys(stack: dict[str, Any], prefix: str) -> dict[str, str]:
    s3 = stack["clients"]["s3"]
    out: dict[str, str] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        out.update({item["Key"]: item["ETag"] for item in page.get("Contents", [])})
    return out


def test_manifest_drop_runs_the_state_machine_and_matches_local(
    stack: dict[str, Any], tmp_path: Path
) -> None:
    data, event = _drop_lake(stack, "demo")
    done = _run(stack, event)
    assert done["status"] == "SUCCEEDED", done
    output = json.loads(done["output"])
    assert output["patients"] == 400
    run_id = output["run_id"]
    assert output["summary_uri"] == f"{RESULTS_ROOT}/{run_id}/summary.json"
    names = stack["shim"].names()
    assert names.count(f"{STACK}-PlanFunction") == 1
    assert names.count(f"{STACK}-ShardFunction") == 4  # one Distributed Map item per shard
    assert names.count(f"{STACK}-ReduceFunction") == 1
    run = batch.load_run(f"{RESULTS_ROOT}/{run_id}/run.json")
    assert run.data == data and len(run.shards) == 4
    assert len(_keys(stack, f"results/{run_id}/counts/")) == 4

    # the local executor on the same lake (one shard, one process) publishes byte-identical summary.json
    local = run_local(data, str(tmp_path / "local"), workers=1)
    assert local.run.run_id != run_id  # different sharding -> different run id, same answer
    assert storage.read_bytes(output["summary_uri"]) == Path(local.summary.path).read_bytes()

    # a redelivered event (EventBridge is at-least-once) starts a second execution that changes nothing
    before = _keys(stack, "results/")
    summary_bytes = storage.read_bytes(output["summary_uri"])
    again = _run(stack, event)
    assert again["status"] == "SUCCEEDED", again
    assert json.loads(again["output"])["run_id"] == run_id
    assert _keys(stack, "results/") == before  # same keys, same ETags (= same bytes)
    assert storage.read_bytes(output["summary_uri"]) == summary_bytes


def test_failing_shard_fails_the_execution_and_publishes_nothing(
    stack: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = batch.evaluate_shard

    def poisoned(run: Any, shard_index: int) -> batch.ShardResult:
        if shard_index == 2:
            raise RuntimeError("injected failure in shard 2")
        return real(run, shard_index)

    monkeypatch.setattr(batch, "evaluate_shard", poisoned)
    _, event = _drop_lake(stack, "broken")
    done = _run(stack, event)
    assert done["status"] == "FAILED", done
    sfn = stack["clients"]["stepfunctions"]
    history = sfn.get_execution_history(executionArn=done["executionArn"], maxResults=1000)["events"]
    text = json.dumps(history, default=str)
    # visible: the parent execution's failure names the map threshold (AWS) or the reducer's refusal (moto)
    assert "States.ExceedToleratedFailureThreshold" in text or "RunIncompleteError" in text
    # On AWS the map itself fails (ToleratedFailurePercentage 0) and Reduce never starts. moto 5.2.5 ignores
    # ToleratedFailurePercentage ("declarations currently have no effect") and runs Reduce anyway: then the
    # reducer's own guard (every planned shard's counts present) must refuse. Either way: FAILED, no summary.
    names = stack["shim"].names()
    if f"{STACK}-ReduceFunction" in names:
        assert "RunIncompleteError" in text and "[2]" in text
    assert not [k for k in _keys(stack, "results/") if k.endswith("summary.json")]
    run_keys = [k for k in _keys(stack, "results/") if k.endswith("run.json")]
    assert len(run_keys) == 1  # planned, but never published
