#!/usr/bin/env bash
# Offline template gate: cfn-lint on the raw SAM template, then on the template expanded by aws-sam-translator.
#
# cfn-lint >= 1.x no longer runs the SAM transform, so a raw-only lint misses circular dependencies and invalid
# runtimes of the generated resources (reference/aws.md section 7); the expanded lint catches them, and also
# validates the inlined ASL (statemachine/batch.asl.json) against the Step Functions schema.
# Tooling lives in its own venv (.tools/venv): aws-sam-translator pins pydantic, which must not leak into .venv.
# Nothing here talks to AWS: no credentials, no network (beyond the one-off venv install).
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=${TOOLS:-.tools/venv}
TEMPLATE=${TEMPLATE:-template.yaml}
EXPANDED=${EXPANDED:-build/template.expanded.json}
find_py312() {  # a python3.12 that really runs (a pyenv shim may exist and fail)
  for c in "${PY312:-}" python3.12 /root/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12; do
    [ -n "$c" ] && "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null && { echo "$c"; return; }
  done
}
PY312=$(find_py312)

if [ ! -x "$TOOLS/bin/cfn-lint" ] || ! "$TOOLS/bin/python" -c "import samtranslator" 2>/dev/null; then
  echo "installing cfn-lint + aws-sam-translator into $TOOLS"
  mkdir -p "$(dirname "$TOOLS")"
  [ -f .tools/.gitignore ] || { mkdir -p .tools && echo '*' > .tools/.gitignore; }
  "$PY312" -m venv "$TOOLS"
  "$TOOLS/bin/pip" install -q --upgrade pip
  "$TOOLS/bin/pip" install -q "cfn-lint>=1.58,<2" "aws-sam-translator>=1.115,<2"
fi

echo "== cfn-lint (raw SAM template): $TEMPLATE"
"$TOOLS/bin/cfn-lint" "$TEMPLATE"

echo "== aws-sam-translator expansion (offline) -> $EXPANDED"
mkdir -p "$(dirname "$EXPANDED")"
AWS_DEFAULT_REGION=${AWS_DEFAULT_REGION:-us-east-1} "$TOOLS/bin/python" - "$TEMPLATE" "$EXPANDED" <<'PYEOF'
import json
import sys
from pathlib import Path

from cfnlint.decode import decode_str  # the YAML loader that understands !Sub, !GetAtt, ...
from samtranslator.translator.transform import transform

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
template, matches = decode_str(src.read_text())
if matches:
    sys.exit(f"cannot parse {src}: {matches}")
template = json.loads(json.dumps(template, default=str))  # plain dicts (cfn-lint's nodes are dict subclasses)


class NoManagedPolicies:
    """Offline stand-in for IAM's managed-policy lookup: SAM then uses the ARNs it already knows."""

    def load(self):
        return {}


def placeholder(uri):
    return f"s3://deploy-check-placeholder/{uri}.zip" if isinstance(uri, str) and not uri.startswith("s3://") else uri


for name, res in template.get("Resources", {}).items():
    props = res.get("Properties", {})
    if res.get("Type") == "AWS::Serverless::Function" and "CodeUri" in props:
        props["CodeUri"] = placeholder(props["CodeUri"])
    if res.get("Type") == "AWS::Serverless::LayerVersion":
        props["ContentUri"] = placeholder(props["ContentUri"])
    if res.get("Type") == "AWS::Serverless::StateMachine" and isinstance(props.get("DefinitionUri"), str):
        # what `sam build`/`sam package` do: the local ASL file becomes the definition
        props["Definition"] = json.loads((src.parent / props.pop("DefinitionUri")).read_text())
globals_fn = template.get("Globals", {}).get("Function", {})
if "CodeUri" in globals_fn:
    globals_fn["CodeUri"] = placeholder(globals_fn["CodeUri"])

expanded = transform(template, {}, NoManagedPolicies())
dst.write_text(json.dumps(expanded, indent=1, sort_keys=True))
types = sorted({r["Type"] for r in expanded["Resources"].values()})
print(f"{len(expanded['Resources'])} resources: {', '.join(types)}")
PYEOF

echo "== cfn-lint (expanded template): $EXPANDED"
"$TOOLS/bin/cfn-lint" "$EXPANDED"

echo "template checks passed"
