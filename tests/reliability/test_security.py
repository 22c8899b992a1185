"""Security properties, each tested so that removing the protection fails a test.

* API: the key (``X-API-Key`` or ``Authorization: Bearer``) is required when configured, and the decision is
  taken by ``hmac.compare_digest`` (constant time), not by ``==``.
* Batch events: locations carried by an event (a whole plan, or the run.json it names) cannot traverse.
* template.yaml: SSE on every bucket (and queue/topic), a bucket policy denying insecure transport, IAM
  statements without wildcard actions or resources, writes only under the results prefix.
* ``make lint`` runs the dependency audit (pip-audit) and the audit fails on a known vulnerability.

The template and Makefile checks are functions: each is also run against a copy with its protection removed,
and must report it (so the test does not pass vacuously).
"""

from __future__ import annotations

import copy
import hmac
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from handlers import batch
from tests.template_yaml import load_template

ROOT = Path(__file__).resolve().parents[2]
KEY = "k3y-0123456789abcdef"

# ------------------------------------------------------------------------------------------------------ API


@pytest.fixture(scope="module")
def plans() -> list[Any]:
    from engine.library import load_library

    return load_library(["CMS125"])


def _client(plans: list[Any], **settings: Any) -> TestClient:
    from handlers.api import create_app
    from handlers.settings import Settings

    return TestClient(
        create_app(Settings(measures="CMS125", **settings), plans=plans), raise_server_exceptions=False
    )


@pytest.fixture(scope="module")
def guarded(plans: list[Any]) -> Iterator[TestClient]:
    with _client(plans, api_key=KEY) as client:
        yield client


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": ""},
        {"X-API-Key": "wrong"},
        {"X-API-Key": KEY[:-1]},  # a prefix
        {"X-API-Key": KEY + "x"},  # longer
        {"X-API-Key": KEY.upper()},
        {"Authorization": f"Basic {KEY}"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Bearer {KEY[:-1]}"},
    ],
    ids=["none", "empty", "wrong", "prefix", "longer", "case", "basic", "bearer-empty", "bearer-prefix"],
)
def test_api_key_required_when_configured(guarded: TestClient, headers: dict[str, str]) -> None:
    response = guarded.get("/Measure", headers=headers)
    assert response.status_code == 401, response.text
    assert KEY not in response.text
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_api_key_accepted(guarded: TestClient) -> None:
    assert guarded.get("/Measure", headers={"X-API-Key": KEY}).status_code == 200
    assert guarded.get("/Measure", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    assert guarded.get("/health").status_code == 200  # liveness stays open


def test_api_open_when_no_key_is_configured(plans: list[Any]) -> None:
    with _client(plans) as client:
        assert client.get("/Measure").status_code == 200


def test_api_key_compared_in_constant_time(guarded: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every comparison goes through compare_digest, and its answer alone decides."""
    calls: list[tuple[Any, Any]] = []
    real = hmac.compare_digest

    def recording(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    monkeypatch.setattr(secrets, "compare_digest", recording)
    assert guarded.get("/Measure", headers={"X-API-Key": KEY}).status_code == 200
    assert guarded.get("/Measure", headers={"X-API-Key": "x" * len(KEY)}).status_code == 401
    assert guarded.get("/Measure", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
    secret = [c for c in calls if KEY.encode() in c or KEY in c]
    assert len(secret) >= 3, calls
    # the decision is compare_digest's: when it says "equal", a wrong key passes (no == short-circuit)
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: True)
    monkeypatch.setattr(secrets, "compare_digest", lambda a, b: True)
    assert guarded.get("/Measure", headers={"X-API-Key": "not-the-key"}).status_code == 200
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: False)
    monkeypatch.setattr(secrets, "compare_digest", lambda a, b: False)
    assert guarded.get("/Measure", headers={"X-API-Key": KEY}).status_code == 401


# ------------------------------------------------------------------------------------------- batch events


@pytest.fixture(scope="module")
def planned(clean_lake: Path, tmp_path_factory: pytest.TempPathFactory) -> batch.RunPlan:
    return batch.plan(
        str(clean_lake), str(tmp_path_factory.mktemp("sec-out")), n_shards=2, measures=["CMS125"]
    )


# Traversals stay inside pytest's temporary folder, so that even without the protection nothing escapes it.
@pytest.mark.parametrize(
    "change",
    [
        {"run_id": "../escaped"},
        {"run_id": "0123456789abcdef/../x"},
        {"run_id": ""},
        {"out": "s3://results/../other"},
        {"out": "{out}/../elsewhere"},
        {"data": "s3://lake/a/../../b"},
        {"data": "{data}/x\x00"},
    ],
    ids=["run-id-traversal", "run-id-suffix", "run-id-empty", "out-s3", "out-local", "data-s3", "data-nul"],
)
def test_plan_carried_by_an_event_cannot_traverse(
    planned: batch.RunPlan, tmp_path_factory: pytest.TempPathFactory, change: dict[str, str]
) -> None:
    doc = {
        **planned.to_dict(),
        **{k: v.format(out=planned.out, data=planned.data) for k, v in change.items()},
    }
    base = tmp_path_factory.getbasetemp()
    before = sorted(base.rglob("*"))
    for handler, event in (
        (batch.shard_handler, {"run": doc, "shard_index": 0}),
        (batch.reduce_handler, {"run": doc}),
    ):
        with pytest.raises(ValueError, match="refused location"):
            handler(event)
    assert sorted(base.rglob("*")) == before  # nothing written anywhere


def test_run_json_named_by_an_event_is_validated_too(planned: batch.RunPlan, tmp_path: Path) -> None:
    """A tampered run.json (its run id names another folder) is refused like an event."""
    forged = tmp_path / "run.json"
    forged.write_bytes(batch.dumps({**planned.to_dict(), "run_id": "../forged"}))
    with pytest.raises(ValueError, match="refused location"):
        batch.shard_handler({"run_uri": str(forged), "shard_index": 0})
    assert not (Path(planned.out).parent / "forged").exists()


def test_a_valid_plan_in_an_event_still_runs(planned: batch.RunPlan) -> None:
    result = batch.shard_handler({"run": planned.to_dict(), "shard_index": 0})
    assert result["run_id"] == planned.run_id


# ---------------------------------------------------------------------------------------------- template


def _text(value: Any) -> str:
    """A resource/ARN expression as text (``!Sub`` strings, ``!GetAtt X.Arn``, ``!Ref X``)."""
    if isinstance(value, dict) and len(value) == 1:
        ((tag, inner),) = value.items()
        if tag == "Sub":
            return inner if isinstance(inner, str) else str(inner[0])
        if tag == "GetAtt":
            return f"${{{inner if isinstance(inner, str) else '.'.join(inner)}}}"
        if tag == "Ref":
            return f"${{{inner}}}"
    return str(value)


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every IAM policy statement granted to a function, state machine, role or managed policy."""
    for name, res in template["Resources"].items():
        props = res.get("Properties") or {}
        kind = res["Type"]
        docs: list[Any] = []
        if kind in ("AWS::Serverless::Function", "AWS::Serverless::StateMachine"):
            docs = _listed(props.get("Policies") or [])
        elif kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            docs = [props.get("PolicyDocument")]
        elif kind == "AWS::IAM::Role":
            docs = [p.get("PolicyDocument") for p in props.get("Policies") or []]
            docs += (
                [{"ManagedPolicyArns": props["ManagedPolicyArns"]}] if props.get("ManagedPolicyArns") else []
            )
        for doc in docs:
            if isinstance(doc, dict) and "Statement" in doc:
                for statement in _listed(doc["Statement"]):
                    yield name, statement
            else:
                yield name, {"Policy": doc}  # a SAM policy template or a managed policy


SAM_POLICY_TEMPLATES = {"LambdaInvokePolicy"}  # each scoped to one named function


def template_problems(template: dict[str, Any]) -> list[str]:
    """Violations of the storage encryption and least-privilege rules, one line each."""
    problems: list[str] = []
    resources = template["Resources"]
    params = template.get("Parameters") or {}
    data_prefix = "${DataPrefix}/" if "DataPrefix" in params else None
    results_prefix = "${ResultsPrefix}/" if "ResultsPrefix" in params else None
    buckets = [n for n, r in resources.items() if r["Type"] == "AWS::S3::Bucket"]
    if not buckets:
        problems.append("no bucket in the template")
    for name in buckets:
        props = resources[name].get("Properties") or {}
        rules = (props.get("BucketEncryption") or {}).get("ServerSideEncryptionConfiguration") or []
        algos = {(r.get("ServerSideEncryptionByDefault") or {}).get("SSEAlgorithm") for r in rules}
        if not algos & {"AES256", "aws:kms", "aws:kms:dsse"}:
            problems.append(f"{name}: no default server-side encryption")
        block = props.get("PublicAccessBlockConfiguration") or {}
        for flag in ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"):
            if block.get(flag) is not True:
                problems.append(f"{name}: {flag} is not true")
        denies = [
            s
            for r in resources.values()
            if r["Type"] == "AWS::S3::BucketPolicy" and (r["Properties"].get("Bucket") == {"Ref": name})
            for s in _listed(r["Properties"]["PolicyDocument"]["Statement"])
            if s.get("Effect") == "Deny"
            and str((s.get("Condition") or {}).get("Bool", {}).get("aws:SecureTransport")).lower() == "false"
        ]
        covered = {_text(x) for s in denies for x in _listed(s.get("Resource"))}
        if not denies or not any(s.get("Principal") in ("*", {"AWS": "*"}) for s in denies):
            problems.append(
                f"{name}: no bucket policy denying insecure transport (aws:SecureTransport false)"
            )
        elif not ({f"${{{name}.Arn}}", f"${{{name}.Arn}}/*"} <= covered):
            problems.append(f"{name}: the insecure-transport deny does not cover the bucket and its objects")
    for name, r in resources.items():
        props = r.get("Properties") or {}
        if r["Type"] == "AWS::SQS::Queue" and not (
            props.get("SqsManagedSseEnabled") or props.get("KmsMasterKeyId")
        ):
            problems.append(f"{name}: queue without server-side encryption")
        if r["Type"] == "AWS::SNS::Topic" and not props.get("KmsMasterKeyId"):
            problems.append(f"{name}: topic without server-side encryption")
    for owner, statement in _statements(template):
        if "Policy" in statement:
            policy = statement["Policy"]
            if not (isinstance(policy, dict) and set(policy) <= SAM_POLICY_TEMPLATES):
                problems.append(f"{owner}: policy {str(policy)[:60]} is not a scoped policy template")
            continue
        if statement.get("Effect") != "Allow":
            continue
        actions = [str(a) for a in _listed(statement.get("Action") or [])]
        if statement.get("NotAction") or statement.get("NotResource"):
            problems.append(f"{owner}: NotAction/NotResource in an Allow statement")
        for action in actions:
            if "*" in action:
                problems.append(f"{owner}: wildcard action {action}")
        targets = [_text(x) for x in _listed(statement.get("Resource") or [])]
        for target in targets:
            if target.strip() == "*" or target.endswith(":::*") or target.endswith(":*"):
                problems.append(f"{owner}: wildcard resource {target}")
        if not any(a.lower().startswith("s3:") for a in actions):
            continue
        object_actions = [a for a in actions if a.lower() not in ("s3:listbucket",)]
        for target in targets:
            bucket_arn = target.split(":::", 1)[-1]
            if object_actions:
                under = [p for p in (data_prefix, results_prefix) if p and f"/{p}" in bucket_arn]
                if not under or not bucket_arn.endswith("/*"):
                    problems.append(f"{owner}: S3 object access beyond the data/results prefixes: {target}")
                writes = [a for a in object_actions if a.lower() in ("s3:putobject", "s3:deleteobject")]
                if writes and (results_prefix is None or f"/{results_prefix}" not in bucket_arn):
                    problems.append(f"{owner}: {', '.join(writes)} outside the results prefix: {target}")
            elif "/" in bucket_arn or "*" in bucket_arn:
                problems.append(f"{owner}: ListBucket on {target}")
            elif not (statement.get("Condition") or {}).get("StringLike", {}).get("s3:prefix"):
                problems.append(f"{owner}: ListBucket without an s3:prefix condition")
    return problems


def test_template_encrypts_storage_and_grants_least_privilege() -> None:
    template = load_template()
    assert template_problems(template) == []
    assert len(list(_statements(template))) >= 8  # the checks looked at the real statements


def _weakened(change: str) -> dict[str, Any]:
    template = copy.deepcopy(load_template())
    res = template["Resources"]
    if change == "no-sse":
        del res["DataBucket"]["Properties"]["BucketEncryption"]
    elif change == "no-tls-deny":
        del res["DataBucketPolicy"]
    elif change == "wildcard-action":
        res["ShardFunction"]["Properties"]["Policies"][0]["Statement"][1]["Action"] = "s3:*"
    elif change == "wildcard-resource":
        res["ReduceFunction"]["Properties"]["Policies"][0]["Statement"][0]["Resource"] = "*"
    elif change == "whole-bucket":
        statement = res["PlanFunction"]["Properties"]["Policies"][0]["Statement"][0]
        bucket = "${AWS::StackName}-data-${AWS::AccountId}-${AWS::Region}"
        statement["Resource"] = {"Sub": f"arn:${{AWS::Partition}}:s3:::{bucket}/*"}
    elif change == "write-to-data":
        statement = res["ShardFunction"]["Properties"]["Policies"][0]["Statement"][0]
        statement["Action"] = ["s3:GetObject", "s3:PutObject"]
    elif change == "managed-policy":
        res["ApiFunction"]["Properties"]["Policies"].append("AmazonS3FullAccess")
    elif change == "list-without-prefix":
        del res["ReduceFunction"]["Properties"]["Policies"][0]["Statement"][1]["Condition"]
    elif change == "plain-queue":
        del res["FailedRunsQueue"]["Properties"]["SqsManagedSseEnabled"]
    return template


@pytest.mark.parametrize(
    "change",
    [
        "no-sse",
        "no-tls-deny",
        "wildcard-action",
        "wildcard-resource",
        "whole-bucket",
        "write-to-data",
        "managed-policy",
        "list-without-prefix",
        "plain-queue",
    ],
)
def test_template_check_catches_a_removed_protection(change: str) -> None:
    assert template_problems(_weakened(change)), f"{change} was not reported"


# ---------------------------------------------------------------------------------------------- make lint


def _recipes(makefile: str) -> dict[str, str]:
    """target -> its recipe text (tab-indented lines, continuations joined)."""
    out: dict[str, str] = {}
    current: str | None = None
    for line in makefile.splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+):(?!=)", line)
        if m:
            current = m.group(1)
            out.setdefault(current, "")
        elif line.startswith("\t") and current is not None:
            out[current] += line.strip() + "\n"
        elif line.strip() and not line.startswith("#") and not line.startswith("\t"):
            current = None if "=" in line else current
    return out


def lint_audit_problems(makefile: str) -> list[str]:
    recipes = _recipes(makefile)
    problems: list[str] = []
    lint, audit = recipes.get("lint", ""), recipes.get("audit", "")
    audits = lambda text: re.search(r"pip[-_]audit", text) is not None  # noqa: E731
    if not (audits(lint) or (re.search(r"\$\(MAKE\)\s+audit\b", lint) and audits(audit))):
        problems.append("make lint does not run pip-audit")
    if audits(audit):
        if not re.search(r"known vulnerabilit[^\n]*exit 1", audit):
            problems.append("the audit does not fail on a known vulnerability")
        if re.search(r"pip[-_]audit[^\n;]*\|\|\s*true", audit):
            problems.append("the audit's failure is ignored")
    return problems


def test_make_lint_runs_pip_audit() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert lint_audit_problems(makefile) == []
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    dry = subprocess.run(["make", "-n", "lint"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert re.search(r"pip[-_]audit", dry.stdout), dry.stdout[-2000:]


@pytest.mark.parametrize("change", ["drop-audit-from-lint", "ignore-failures"])
def test_make_lint_check_catches_a_removed_audit(change: str) -> None:
    makefile = (ROOT / "Makefile").read_text()
    if change == "drop-audit-from-lint":
        weakened = makefile.replace("\t$(MAKE) audit\n", "")
    else:
        weakened = makefile.replace(
            'if echo "$$out" | grep -q "known vulnerabilit"; then echo "audit: FAILED, see above"; exit 1; fi; \\\n',
            "",
        )
    assert weakened != makefile
    assert lint_audit_problems(weakened), change
