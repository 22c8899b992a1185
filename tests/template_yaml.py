"""template.yaml as data, for the tests that check the deployed wiring (tests/aws) and its security properties
(tests/reliability): a YAML loader that keeps CloudFormation's short-form intrinsics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

TEMPLATE = Path(__file__).resolve().parents[1] / "template.yaml"


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    """template.yaml with CloudFormation tags (!Ref, !Sub, !GetAtt...) kept as ``{"Tag": value}``."""

    class Loader(yaml.SafeLoader):
        pass

    def tagged(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
        if isinstance(node, yaml.ScalarNode):
            value: Any = loader.construct_scalar(node)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        return {suffix: value}

    Loader.add_multi_constructor("!", tagged)
    doc: dict[str, Any] = yaml.load(path.read_text(), Loader=Loader)  # a SafeLoader subclass
    return doc
