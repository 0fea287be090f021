"""CLI verbs `predict` and `evaluate`: per-image predictions, and the flags' evidence on held-out images."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from busi_lite.cli.common import dump, log


def _flag_options(f):
    opts = [
        click.option("--low-confidence", "low_confidence", type=click.FloatRange(0, 1), default=None,
                     help="Override the model's low-confidence threshold (max probability)."),
        click.option("--lesion-threshold", type=click.FloatRange(0, 1), default=None,
                     help="Override the lesion-present threshold (peak lesion-map cell) of the mismatch flag."),
        click.option("--ood-threshold", type=float, default=None,
                     help="Override the unusual-input score threshold (JSON: ood_score) of the unusual_input flag."),
        click.option("--no-flag-low-confidence", "no_low", is_flag=True, help="Do not raise low_confidence."),
        click.option("--no-flag-mismatch", "no_mismatch", is_flag=True, help="Do not raise mismatch."),
        click.option("--no-flag-ood", "--no-flag-unusual", "no_ood", is_flag=True,
                     help="Do not raise unusual_input (unusual-input score and pixel checks); "
                          "verdicts are then never withheld."),
        click.option("--no-pixel-checks", "no_pixel", is_flag=True,
                     help="unusual_input from the unusual-input score only (skip the near-constant / colour rules)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def site_option(f):
    """``--site NAME`` ($BUSI_LITE_SITE): where the images come from (busi_lite.serving.advice)."""
    return click.option("--site", metavar="NAME", envvar="BUSI_LITE_SITE", show_envvar=True, default=None,
                        help="The site (hospital) the images come from. When the model was trained there or "
                             "calibrated there (see `busi-lite info`), the whole-image verdict is the answer to "
                             "trust; otherwise (an unknown site, or none given and too few images to check) the "
                             "lesion-box answer is. Names compare case-insensitively.")(f)


def _site_note(pr) -> None:
    """One stderr line: the site given and whether the model is validated there."""
    st = pr.site
    if st.name is None:
        log(f"{st.text} (give it with --site NAME or $BUSI_LITE_SITE)")
    elif not st.validated:
        log(f"note: {st.reason}: the lesion-box answer is the one to trust there (unless the batch check finds "
            "the images look like a training site)")
    else:
        log(st.text)


def _flag_config(low_confidence, lesion_threshold, ood_threshold, no_low, no_mismatch, no_ood, no_pixel):
    from busi_lite.serving.flags import FlagConfig

    return FlagConfig(low_confidence=not no_low, mismatch=not no_mismatch, unusual_input=not no_ood,
                      pixel_checks=not no_pixel, low_confidence_threshold=low_confidence,
                      lesion_threshold=lesion_threshold, ood_threshold=ood_threshold)


CSV_FIELDS = ("path", "frame", "sop_instance_uid", "ok", "label", "p_normal", "p_benign", "p_malignant",
              "malignant_alert", "malignant_threshold", "lesion_peak", "lesion_present", "lesion_area", "lesion_bbox",
              "ood_score", "flags", "flag_reasons", "overlay", "error", "box", "box_p_benign", "box_p_malignant",
              "box_malignant_alert", "box_malignant_threshold", "proposed_box", "notes", "withheld", "model",
              "model_digest", "threshold_source", "recommended", "recommended_reason")


def _csv_row(p) -> dict:
    from busi_lite.common.csvcell import safe_cell

    row = {"path": p.path, "ok": int(p.ok), "error": p.error or "",
           "frame": "" if p.frame is None else p.frame, "sop_instance_uid": p.sop_instance_uid or "",
           "notes": " | ".join(p.notes), "withheld": p.withheld or "", "recommended": p.recommended or "",
           "recommended_reason": p.recommended_reason or ""}
    if p.model is not None:
        row.update(model=p.model.name, model_digest=p.model.digest or "", threshold_source=p.model.threshold_source)
    if p.ok:
        row.update({f"p_{c}": f"{v:.5f}" for c, v in (p.proba or {}).items()})
        row.update(label=p.label or "", malignant_alert="" if p.malignant_alert is None else int(p.malignant_alert),
                   malignant_threshold="" if p.malignant_threshold is None else f"{p.malignant_threshold:.5f}",
                   lesion_peak="" if p.lesion_peak is None else f"{p.lesion_peak:.4f}",
                   lesion_present="" if p.lesion_present is None else int(p.lesion_present),
                   lesion_area="" if p.lesion_area is None else f"{p.lesion_area:.4f}",
                   lesion_bbox="" if not p.lesion_bbox else " ".join(map(str, p.lesion_bbox)),
                   ood_score="" if p.ood_score is None else f"{p.ood_score:.3f}",
                   flags=";".join(f.name for f in p.flags), flag_reasons=" | ".join(f.reason for f in p.flags),
                   overlay=p.overlay or "", box="" if not p.box else " ".join(map(str, p.box)),
                   proposed_box="" if not p.proposed_box else " ".join(map(str, p.proposed_box)))
        if p.box_proba is not None:
            row.update(box_p_benign=f"{p.box_proba['benign']:.5f}", box_p_malignant=f"{p.box_proba['malignant']:.5f}",
                       box_malignant_alert=int(p.box_malignant_alert),
                       box_malignant_threshold=f"{p.box_malignant_threshold:.5f}")
    return {k: safe_cell(v) for k, v in row.items()}      # a file named =HYPERLINK(...) stays text


def _human(p) -> str:
    import textwrap

    from busi_lite.serving.verdict import (
        answer_text,
        probs_text,
        provenance_text,
        score_text,
    )

    if not p.ok:
        return f"{p.name}\n  ERROR {p.error}"
    lines = [p.name]
    if p.sop_instance_uid:
        lines.append(f"  SOP Instance UID {p.sop_instance_uid}")
    if p.dicom_crop:
        lines.append(f"  ultrasound region (x0,y0,x1,y1) {tuple(p.dicom_crop)} of the frame used")
    lines += textwrap.wrap(answer_text(p), 110, initial_indent="  ", subsequent_indent="    ", break_on_hyphens=False)
    if not p.withheld:
        lines.append(f"  {probs_text(p)}")
    lines += textwrap.wrap(provenance_text(p), 110, initial_indent="  ", subsequent_indent="    ",
                           break_on_hyphens=False)
    if p.lesion is not None:
        if p.lesion_bbox:
            lines.append(f"  lesion map: peak {p.lesion_peak:.2f} ({'lesion' if p.lesion_present else 'no lesion'}), "
                         f"area {100 * p.lesion_area:.1f}% of the centre crop, box (l,t,r,b) {tuple(p.lesion_bbox)}")
        else:
            lines.append(f"  lesion map: peak {p.lesion_peak:.2f} ({'lesion' if p.lesion_present else 'no lesion'}), "
                         "no cell >= 0.5")
    if p.box_proba is not None:
        pm, t = p.box_proba["malignant"], p.box_malignant_threshold
        lines.append(f"  lesion box (l,t,r,b) {tuple(p.box)}: box head p(benign) {p.box_proba['benign']:.3f}, "
                     f"p(malignant) {pm:.3f} -> {'REFER' if p.box_malignant_alert else 'no referral'} "
                     f"(box-mode threshold {t:.3f})")
    if p.proposed_box:
        lines.append(f"  proposed lesion box (l,t,r,b) {tuple(p.proposed_box)} (coarse, from the lesion map)")
    lines += [f"  note: {n}" for n in p.notes if not n.startswith("proposed_box")]
    if score_text(p):
        lines.append(f"  {score_text(p)}")
    lines += [f"  FLAG {f.name}: {f.reason}" for f in p.flags]
    if p.checks.get("mismatch") == "not_applicable":
        lines.append("  (mismatch check not applicable: this model has no lesion map)")
    if not p.flags:
        lines.append("  no flags")
    if p.overlay:
        lines.append(f"  overlay {p.overlay}")
    if p.recommended:
        lines.append(f"  answer to trust: {_TRUST[p.recommended]} ({p.recommended_reason})")
    return "\n".join(lines)


_TRUST = {"box": "the LESION BOX answer (draw a box: --box X0,Y0,X1,Y1)", "whole_image": "the whole-image verdict"}


def _site_check(pr, results, human: bool) -> None:
    """The batch site-shift check: one warning for the whole batch (stderr), and each result's
    recommended answer updated; human output adds one summary line."""
    from busi_lite.serving.shift import SHIFT_WARNING

    check = pr.check_batch(results)
    if check.shifted:
        log(f"WARNING: {SHIFT_WARNING}")
    if human and check.checked:
        worst = ", ".join(f"{s['name']} {s['statistic']:.0f} (threshold {s['threshold']:.0f})" for s in check.sites)
        click.echo(f"site check on {check.n} images: {check.reason} [{worst}]"
                   + (f" -> answer to trust for all of them: {_TRUST['box' if pr.supports_box else 'whole_image']}"
                      if check.shifted else ""))


@click.command(short_help="Classify images and DICOM files: label, screen, flags.")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path),
              help="Model stem NAME (NAME.npz + NAME.json); default $BUSI_LITE_MODEL, then the shipped model.")
@click.option("--backbone", type=click.Path(dir_okay=False, path_type=Path),
              help="ONNX backbone (default $BUSI_LITE_BACKBONE, then the shipped one).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list (one object per image or DICOM frame).")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (one row per image or DICOM frame).")
@click.option("--overlay", "overlay_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write OUTDIR/<name>_overlay.png per image (cine: <name>_f<frame>_overlay.png): "
                   "notice, model and threshold origin, answer, flags, legend (and the lesion map beside the plain "
                   "image for models that have one).")
@click.option("--threshold-malignant", type=click.FloatRange(0, 1), default=None,
              help="p(malignant) at or above which malignant_alert is raised (default: the model's operating point).")
@click.option("--frame", type=click.IntRange(min=0), default=None,
              help="DICOM cine: predict only this 0-based frame (default: every frame). Images ignore it.")
@click.option("--box", "box_text", metavar="X0,Y0,X1,Y1", default=None,
              help="Lesion-box mode for ONE image: the lesion's box in its pixels (x1,y1 exclusive). Models with a "
                   "box head add p(malignant) from [whole image, lesion crop]; others ignore it with a note.")
@click.option("--boxes", "boxes_csv", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Lesion boxes for several images: CSV with header file,x0,y0,x1,y1 (file relative to the CSV "
                   "or absolute); images without a row get no box.")
@_flag_options
@click.option("--show-anyway", is_flag=True,
              help="Research use: give the verdict even when unusual_input fires (by default it is withheld).")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="Images per backbone run.")
@site_option
def predict(images, model, backbone, as_json, as_csv, overlay_dir, threshold_malignant, frame, box_text, boxes_csv,
            low_confidence, lesion_threshold, ood_threshold, no_low, no_mismatch, no_ood, no_pixel, show_anyway,
            batch_size, site):
    """Classify ultrasound images and DICOM files: one answer (class + screen), flags.

    For image files (PNG, JPEG, BMP, TIFF), DICOM files (.dcm, or any file with
    the DICM preamble; every frame of a cine, or --frame N) or folders: class
    one answer: the most probable class, then the sensitive screen (REFER when
    p(malignant) >= the model's screening threshold, so it can refer an image
    whose most probable class is normal or benign), with the threshold's origin
    and the model's name and digest; lesion map (models that have one) and
    safety flags. When unusual_input fires the verdict is WITHHELD (label null
    in --json, with the reason in "withheld"); --show-anyway gives it for
    research. DICOM results name the file, frame and SOP Instance UID only.

    A folder expands to its image and DICOM files (sorted, not recursive, lesion
    masks *_mask*.png and hidden files skipped). Files that cannot be read are
    reported and skipped; the exit code is 1 when any failed.

    Lesion-box mode: --box X0,Y0,X1,Y1 (one image) or --boxes boxes.csv (several).
    Each result says which answer to trust (whole image or lesion box): give
    --site NAME so a site the model was trained or calibrated on gets the
    whole-image verdict; a folder of 20+ images is also checked against the
    training sites.

    \b
    Flags: low_confidence, mismatch (lesion-map models), unusual_input; each printed with its reason.
    """
    from busi_lite.serving.boxes import make_box, read_boxes_csv
    from busi_lite.serving.inference import Predictor

    if as_json and as_csv:
        raise click.UsageError("choose one of --json and --csv")
    if overlay_dir is not None and overlay_dir.exists() and not overlay_dir.is_dir():
        raise click.BadParameter(f"{overlay_dir} exists and is not a folder", param_hint="--overlay")
    boxes = None
    if box_text is not None:
        if boxes_csv is not None:
            raise click.UsageError("choose one of --box (one image) and --boxes (a CSV)")
        if len(images) != 1 or images[0].is_dir():
            raise click.BadParameter("--box goes with exactly one image file; use --boxes boxes.csv for several",
                                     param_hint="--box")
        boxes = {images[0]: make_box(box_text, "--box")}
    elif boxes_csv is not None:
        from busi_lite.serving.inference import expand_inputs

        boxes = read_boxes_csv(boxes_csv)
        unused = sorted(set(boxes) - {f.resolve() for f in expand_inputs(list(images))[0]})
        if unused:  # a typo in the csv would otherwise silently give "no box"
            log(f"note: {len(unused)} row(s) of {boxes_csv} name no input image, e.g. "
                + "; ".join(f"{boxes[u].source}: {u}" for u in unused[:3]))
    flags = _flag_config(low_confidence, lesion_threshold, ood_threshold, no_low, no_mismatch, no_ood, no_pixel)
    pr = Predictor(model, backbone, threshold_malignant, flags, batch_size, show_anyway=show_anyway, site=site)
    log(f"using {pr.describe()}")
    _site_note(pr)
    if boxes and not pr.supports_box:
        log("note: this model has no lesion-box mode; the box(es) are ignored")

    def each(p):
        if not p.ok:
            log(f"error: {p.error}")
        elif not (as_json or as_csv):
            click.echo(_human(p))

    results = pr.predict(list(images), overlay_dir=overlay_dir, on_result=each, frame=frame, boxes=boxes)
    _site_check(pr, results, not (as_json or as_csv))
    if as_json:
        click.echo(dump([p.to_dict() for p in results]))
    elif as_csv:
        import csv
        import io

        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, lineterminator="\n")
        w.writeheader()
        for p in results:
            w.writerow(_csv_row(p))
        click.echo(buf.getvalue(), nl=False)
    failed = [p for p in results if not p.ok]
    ok = len(results) - len(failed)
    flagged = sum(1 for p in results if p.ok and p.flags)
    withheld = sum(1 for p in results if p.ok and p.withheld)
    log(f"{ok} image(s)/frame(s) predicted ({withheld} verdict(s) withheld: unusual input), {flagged} flagged, "
        f"{len(failed)} failed")
    sys.exit(1 if failed else 0)


@click.command()
@click.option("--model", type=click.Path(dir_okay=False, path_type=Path),
              help="Model stem NAME (default $BUSI_LITE_MODEL, then the shipped model).")
@click.option("--cache", type=click.Path(dir_okay=False, path_type=Path),
              help="The feature cache the model was trained on (default $BUSI_LITE_CACHE or cache/busi_features.h5).")
@click.option("--threshold-malignant", type=click.FloatRange(0, 1), default=None,
              help="Operating point to evaluate (default: the model's).")
@_flag_options
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--per-image", is_flag=True, help="With --json: include every test image's label and flags.")
@click.option("--data", "data_dir", type=click.Path(exists=True, path_type=Path), default=None,
              help="Evaluate on EVERY image of this labelled folder or CSV manifest file,label[,patient][,x0,y0,x1,y1] "
                   "(another site; any subset of the classes) "
                   "instead of the held-out split; --cache is then the folder's cache (default "
                   "cache/<folder name>_features.h5, extracted when missing).")
@click.option("--backbone", type=click.Path(dir_okay=False, path_type=Path),
              help="With --data: ONNX backbone for extraction (default $BUSI_LITE_BACKBONE, then the packaged one).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --data: write a per-image CSV (path, true class, probabilities, label, alert, flags).")
@site_option
@click.pass_context
def evaluate(ctx, model, cache, threshold_malignant, low_confidence, lesion_threshold, ood_threshold, no_low,
             no_mismatch, no_ood, no_pixel, as_json, per_image, data_dir, backbone, csv_path, site):
    """Do the safety flags catch the errors?

    Rebuilds the model's split from its sidecar and, on the held-out test images
    only, compares accuracy and error shares of flagged and unflagged images (per
    flag and for any flag), plus the malignant operating point's test recall / FAR.

    With --data DIR (another site): every image of that labelled folder instead,
    plus AUC with a bootstrap interval, recall/FAR/precision with Wilson intervals
    at argmax and at the operating point, and the confusion matrix; --site NAME
    (the folder's site) adds a note saying whether the model was trained or
    calibrated there (then the figures are not zero-shot).
    """
    from busi_lite.cli.tables import evaluate_table
    from busi_lite.evaluation.flag_eval import evaluate_flags
    from busi_lite.features.cache import FeatureCache
    from busi_lite.model.model import Model

    flags = _flag_config(low_confidence, lesion_threshold, ood_threshold, no_low, no_mismatch, no_ood, no_pixel)
    if data_dir is not None:
        from busi_lite.cli.site import evaluate_folder

        return evaluate_folder(model, data_dir, cache, backbone, threshold_malignant, flags, as_json, csv_path,
                               per_image, site)
    if backbone is not None or csv_path is not None:
        raise click.UsageError("--backbone and --csv go with --data")
    if site is not None and ctx.get_parameter_source("site") is click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("--site goes with --data (the held-out split is the model's own training data)")
    m = Model.load(model)
    fc = FeatureCache(cache)
    res = evaluate_flags(m, fc, flags, threshold_malignant, per_image=per_image)
    click.echo(dump(res) if as_json else evaluate_table(res))
