"""The registered model's outputs are the table's value columns of the same name and type."""

from __future__ import annotations

import numpy as np

from ecoval_ops.lakehouse.columns import VALUE_COLUMNS
from ecoval_ops.tracking.registry import MODEL_OUTPUTS, model_signature
from ecoval_ops.valuation.result import ValuationResult


def test_each_model_output_is_a_value_column_of_the_same_type() -> None:
    for name, (attribute, kind) in MODEL_OUTPUTS.items():
        assert VALUE_COLUMNS[name] == kind, name
        field_or_property = attribute in ValuationResult.__dataclass_fields__ or isinstance(
            getattr(ValuationResult, attribute, None), property
        )
        assert field_or_property, attribute


def test_the_signature_names_the_inputs_and_the_outputs_in_their_types() -> None:
    columns = {"embedding": ["e0", "e1"], "is_vector": False, "label": "y"}
    signature = model_signature(columns, np.array(["a", "b"]))
    assert signature.inputs.input_names() == ["e0", "e1", "y"]
    assert signature.inputs.inputs[-1].type.name == "string"
    # The outputs in the table's value-column types: what a downstream join of predict() expects.
    outputs = {c.name: c.type.name for c in signature.outputs.inputs}
    assert outputs == {name: VALUE_COLUMNS[name] for name in MODEL_OUTPUTS}
    vector = model_signature({**columns, "embedding": ["emb"], "is_vector": True}, np.array([0, 1]))
    assert vector.inputs.input_names() == ["emb", "y"]
