"""The OpenAPI schema of a prediction record is generated from the Prediction dataclass."""

from __future__ import annotations

from dataclasses import dataclass, fields

import pytest

from busi_lite.serving.flags import Flag
from busi_lite.serving.prediction import Prediction
from busi_lite.web import openapi

_PY = {"string": str, "boolean": bool, "integer": int, "number": (int, float), "object": dict,
       "array": list, "null": type(None)}


def _conforms(value, prop) -> bool:
    types_ = prop["type"] if isinstance(prop["type"], list) else [prop["type"]]
    ok = any(isinstance(value, _PY[t]) and not (t in ("integer", "number") and isinstance(value, bool))
             for t in types_)
    if ok and isinstance(value, list) and "items" in prop:
        ok = all(_conforms(v, prop["items"]) for v in value)
    if ok and isinstance(value, dict) and "properties" in prop:
        ok = all(_conforms(value[k], p) for k, p in prop["properties"].items() if k in value)
    return ok


def test_every_prediction_field_is_in_the_schema_and_nothing_else():
    schema = openapi.spec(10, 50)["components"]["schemas"]["Prediction"]
    names = [f.name for f in fields(Prediction)]
    assert list(schema["properties"])[:len(names)] == names
    assert set(schema["properties"]) - set(names) == {"preview", "screen"}  # the web-only fields
    assert schema["required"] == ["path", "ok"]


def test_a_full_record_conforms_to_the_generated_types():
    p = Prediction("a.png", True, proba={"normal": 0.1, "benign": 0.2, "malignant": 0.7}, label="malignant",
                   malignant_alert=True, malignant_threshold=0.07, lesion=[[0.1] * 7] * 7, lesion_peak=0.9,
                   lesion_present=True, lesion_area=0.2, lesion_bbox=[1, 2, 3, 4],
                   flags=[Flag("low_confidence", "top-2 margin 0.01")], checks={"low_confidence": "flagged"},
                   ood_score=1.0, size=[10, 10], crop_box=[0, 0, 10, 10], overlay="o.png", frame=0, n_frames=3,
                   sop_instance_uid="1.2.3", dicom_crop=[0, 0, 5, 5], box=[1, 1, 4, 4],
                   box_proba={"benign": 0.3, "malignant": 0.7}, box_malignant_alert=True,
                   box_malignant_threshold=0.5, proposed_box=[0, 0, 2, 2], notes=["n"])
    props = openapi.prediction_schema()["properties"]
    for rec in (p.to_dict(), Prediction("b.png", False, error="unreadable").to_dict()):
        bad = {k: v for k, v in rec.items() if not _conforms(v, props[k])}
        assert not bad, f"values outside their generated schema: {bad}"
    assert not _conforms("x", props["ok"]) and not _conforms(True, props["ood_score"])  # the checker can fail


def test_a_field_added_to_the_dataclass_follows_with_its_comment():
    @dataclass
    class Wider(Prediction):
        birads: int | None = None   # BI-RADS category suggested
        votes: list = None          # one per reader

    props = openapi.prediction_schema(Wider)["properties"]
    assert props["birads"] == {"type": ["integer", "null"], "description": "BI-RADS category suggested"}
    assert props["votes"]["type"] == "array" and props["votes"]["description"] == "one per reader"


def test_a_field_type_without_a_json_type_is_refused():
    @dataclass
    class Odd(Prediction):
        when: complex | None = None

    with pytest.raises(TypeError, match="no JSON type"):
        openapi.prediction_schema(Odd)
