"""The OpenAPI 3.1 description served at ``/openapi.json``.

The ``Prediction`` schema is generated from the dataclass
:class:`busi_lite.serving.prediction.Prediction`: one property per field, its JSON type from
the field's annotation (``X | None`` adds ``"null"``), required = the fields without a default,
its description = the field's trailing comment in prediction.py (when the source is available).
A field added to the dataclass appears here with no other edit; ``_DETAIL`` only adds item
schemas and descriptions to fields whose comment or type says too little.
"""

from __future__ import annotations

import inspect
import io
import re
import tokenize
import types
import typing
from dataclasses import MISSING, fields, is_dataclass

from busi_lite.serving.prediction import Prediction

_ERROR = {"type": "object", "required": ["error"],
          "properties": {"error": {"type": "string", "description": "what went wrong -> how to fix it"},
                         "file": {"type": ["string", "null"], "description": "the upload at fault, if any"}}}

_JSON_TYPE = {str: "string", bool: "boolean", int: "integer", float: "number", dict: "object", list: "array"}

_DETAIL = {  # what the annotation cannot say (item schemas), merged over the generated property
    "path": {"description": "the upload's file name (CLI: the path given)"},
    "proba": {"additionalProperties": {"type": "number"}, "description": "class -> probability"},
    "label": {"description": "most probable class"},
    "malignant_alert": {"description": "sensitive screen (REFER): p(malignant) >= malignant_threshold; null when "
                                       "withheld"},
    "model": {"description": "which model and threshold made the result (Provenance.to_dict): name, digest "
                             "(SHA-256 of card + weights), threshold_origin (training | site | override | none), "
                             "threshold_source in words, target_recall, false_alarm_rate"},
    "flags": {"items": {"type": "object", "required": ["name", "reason"],
                        "properties": {"name": {"type": "string"}, "reason": {"type": "string"}}}},
    "checks": {"additionalProperties": {"type": "string"}},
    "box_proba": {"additionalProperties": {"type": "number"}},
    "notes": {"items": {"type": "string"}},
}

_WEB_ONLY = {"preview": {"type": "string", "description": "JPEG data URL of the decoded image (preview=1 only)"},
             "screen": {"type": ["string", "null"], "description": "the sensitive screen in words after its headline "
                        "(busi_lite.serving.verdict.screen_sentence); null without a verdict or threshold"}}


def json_type(annotation) -> list[str]:
    """JSON Schema type names of a field annotation: ``float | None`` -> ["number", "null"]."""
    args = typing.get_args(annotation) if isinstance(annotation, types.UnionType) or \
        typing.get_origin(annotation) is typing.Union else (annotation,)
    out = []
    for a in args:
        a = typing.get_origin(a) or a
        if a is type(None):
            out.append("null")
        elif a in _JSON_TYPE:
            out.append(_JSON_TYPE[a])
        elif is_dataclass(a):     # a nested record (e.g. Provenance): its to_dict() is an object
            out.append("object")
        else:
            raise TypeError(f"Prediction field type {a!r} has no JSON type: add it to openapi._JSON_TYPE")
    return out


def field_comments(cls) -> dict[str, str]:
    """{field name: its trailing ``# comment``} from the class source; {} when the source is unavailable."""
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out = {}
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        m = re.match(r"\s+(\w+)\s*:", tok.line) if tok.type == tokenize.COMMENT else None
        if m and m.group(1) not in out:
            out[m.group(1)] = tok.string.lstrip("#").strip()
    return out


def prediction_schema(cls=Prediction) -> dict:
    """The JSON Schema of one ``Prediction.to_dict()`` record (plus the web-only ``preview`` and ``screen``);
    ``cls``: the dataclass to describe (Prediction; tests pass a subclass)."""
    hints = typing.get_type_hints(cls)
    notes = field_comments(cls)
    props, required = {}, []
    for f in fields(cls):
        t = json_type(hints[f.name])
        prop = {"type": t[0] if len(t) == 1 else t}
        if f.name in notes:
            prop["description"] = notes[f.name]
        prop.update(_DETAIL.get(f.name, {}))
        props[f.name] = prop
        if f.default is MISSING and f.default_factory is MISSING:
            required.append(f.name)
    props.update(_WEB_ONLY)
    return {"type": "object",
            "description": "One prediction: the record `busi-lite predict --json` prints (Prediction.to_dict), "
                           "plus the web-only `screen` (the screen in words) and `preview` when asked.",
            "required": required, "properties": props}


def spec(max_file_mb: float, max_request_mb: float) -> dict:
    err = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "busi-lite local API", "version": "1",
                 "description": "Breast-ultrasound triage for research. Not a medical device: no output is a "
                                "diagnosis. Uploads are processed in memory and not stored."},
        "paths": {
            "/api/info": {"get": {
                "summary": "The model and backbone answering, classes, thresholds and limits",
                "responses": {"200": {"description": "model information",
                                      "content": {"application/json": {"schema": {"type": "object"}}}}}}},
            "/api/predict": {"post": {
                "summary": "Predict one or more images or DICOM files",
                "description": "Multipart form. Status 200 when at least one file was predicted; a file that "
                               "cannot be used becomes an ok=false record naming it. When no file could be "
                               "predicted: 415 (not an image/DICOM) or 400 (broken file). A DICOM cine gives one "
                               "record per frame.",
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                    "type": "object", "required": ["files"],
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"},
                                  "description": f"PNG/JPEG/BMP/TIFF/DICOM, at most {max_file_mb:g} MB each, "
                                                 f"{max_request_mb:g} MB per request"},
                        "box": {"type": "string", "pattern": r"^[-0-9.]+,[-0-9.]+,[-0-9.]+,[-0-9.]+$",
                                "description": "lesion box x0,y0,x1,y1 in original pixels (one file only); used "
                                               "by models with a lesion-box mode, else ignored with a note"},
                        "preview": {"type": "string", "enum": ["0", "1"],
                                    "description": "1: add a JPEG preview of each decoded image"},
                        "show_anyway": {"type": "string", "enum": ["0", "1"],
                                        "description": "1: give verdicts for unusual inputs too (research use)"}}}}}},
                "responses": {
                    "200": {"description": "one record per image (per frame for DICOM cines)",
                            "content": {"application/json": {"schema": {
                                "type": "array", "items": {"$ref": "#/components/schemas/Prediction"}}}}},
                    "400": {"description": "broken file, bad box or malformed form", "content": err},
                    "413": {"description": "a file or the request is over the size or decoded-pixel limit",
                            "content": err},
                    "403": {"description": "cross-origin upload (another web site's page) refused", "content": err},
                    "408": {"description": "upload too slow", "content": err},
                    "415": {"description": "not an image or DICOM file", "content": err}}}},
            "/openapi.json": {"get": {"summary": "this description",
                                      "responses": {"200": {"description": "OpenAPI 3.1 document"}}}},
        },
        "components": {"schemas": {"Prediction": prediction_schema(), "Error": _ERROR}},
    }
