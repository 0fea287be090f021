"""The static OpenAPI 3.1 description served at ``/openapi.json`` (kept by hand, tested)."""

from __future__ import annotations

_ERROR = {"type": "object", "required": ["error"],
          "properties": {"error": {"type": "string", "description": "what went wrong -> how to fix it"},
                         "file": {"type": ["string", "null"], "description": "the upload at fault, if any"}}}

_RECORD = {
    "type": "object",
    "description": "One prediction: the record `busi-lite predict --json` prints, plus web-only fields "
                   "(frame/n_frames/sop_instance_uid/dicom_crop for DICOM, box/notes, preview when asked).",
    "required": ["path", "ok"],
    "properties": {
        "path": {"type": "string", "description": "the upload's file name"},
        "ok": {"type": "boolean"},
        "error": {"type": ["string", "null"]},
        "proba": {"type": ["object", "null"], "additionalProperties": {"type": "number"}},
        "label": {"type": ["string", "null"], "description": "most probable class"},
        "malignant_alert": {"type": ["boolean", "null"],
                            "description": "high-sensitivity screen: p(malignant) >= malignant_threshold"},
        "malignant_threshold": {"type": ["number", "null"]},
        "lesion": {"type": ["array", "null"], "description": "7x7 lesion probabilities over crop_box, rows top->bottom"},
        "lesion_peak": {"type": ["number", "null"]},
        "flags": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string"}, "reason": {"type": "string"}}}},
        "checks": {"type": "object", "additionalProperties": {"type": "string"}},
        "ood_score": {"type": ["number", "null"]},
        "size": {"type": ["array", "null"], "description": "[width, height] in pixels"},
        "crop_box": {"type": ["array", "null"], "description": "[left, top, right, bottom]: the square the network sees"},
        "frame": {"type": "integer", "description": "DICOM only: frame index (0-based)"},
        "n_frames": {"type": "integer", "description": "DICOM only"},
        "sop_instance_uid": {"type": "string", "description": "DICOM only, when present"},
        "box": {"type": "array", "description": "the lesion box received, [x0, y0, x1, y1]"},
        "notes": {"type": "array", "items": {"type": "string"}},
        "preview": {"type": "string", "description": "JPEG data URL of the decoded image (preview=1 only)"},
    },
}


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
                                    "description": "1: add a JPEG preview of each decoded image"}}}}}},
                "responses": {
                    "200": {"description": "one record per image (per frame for DICOM cines)",
                            "content": {"application/json": {"schema": {
                                "type": "array", "items": {"$ref": "#/components/schemas/Prediction"}}}}},
                    "400": {"description": "broken file, bad box or malformed form", "content": err},
                    "413": {"description": "a file or the request is over the size limit", "content": err},
                    "415": {"description": "not an image or DICOM file", "content": err}}}},
            "/openapi.json": {"get": {"summary": "this description",
                                      "responses": {"200": {"description": "OpenAPI 3.1 document"}}}},
        },
        "components": {"schemas": {"Prediction": _RECORD, "Error": _ERROR}},
    }
