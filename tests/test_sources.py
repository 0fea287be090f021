"""Dataset sources (folder, CSV manifest) and training on several sources at once."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image
from synth import make_busi_tree

from busi_lite.features.cache import FeatureCache, extract
from busi_lite.io import manifest as MF
from busi_lite.io.sources import FolderSource, ManifestSource, open_source
from busi_lite.model.config import Config
from busi_lite.training import site as S
from busi_lite.training import sources as T

BOX_VIEWS = ("flip", "box", "box_flip", "box_j0", "box_j1", "box_j0_flip", "box_j1_flip", "box_s10")


def _site_manifest(root, tree, boxes=True):
    """A manifest of the site tree's images (masks moved away so the boxes come from the CSV only);
    two images share patient P1."""
    lines = ["file,label,patient,x0,y0,x1,y1"]
    for i, (rel, cls) in enumerate(sorted(tree["images"].items())):
        mask = root / rel.replace(".png", "_mask.png")
        m = np.asarray(Image.open(mask).convert("L")) > 0
        mask.rename(root / "masks_kept_apart" / mask.name) if mask.exists() else None
        ys, xs = np.nonzero(m)
        box = f"{xs.min()},{ys.min()},{xs.max() + 1},{ys.max() + 1}" if boxes and len(xs) else ",,,"
        lines.append(f"{rel},{cls},{'P1' if i < 2 else f'P{i}'},{box}")
    (root / "cases.csv").write_text("\n".join(lines) + "\n")
    return root / "cases.csv"


@pytest.fixture(scope="module")
def caches(tmp_path_factory, tiny_backbone):
    out = {}
    broot = tmp_path_factory.mktemp("busi")
    make_busi_tree(broot, n_per_class=(8, 14, 12), seed=1, extras=False)
    out["busi"] = tmp_path_factory.mktemp("c") / "busi.h5"
    extract(broot, out["busi"], tiny_backbone, views=BOX_VIEWS, progress=False, log=lambda m: None)
    sroot = tmp_path_factory.mktemp("hospital")
    tree = make_busi_tree(sroot, n_per_class=(0, 16, 12), seed=2, extras=False)
    shutil.rmtree(sroot / "normal")
    for p in list(sroot.glob("*/*_mask_1.png")):
        p.unlink()
    (sroot / "masks_kept_apart").mkdir()
    out["manifest"] = _site_manifest(sroot, {"images": {k: v for k, v in tree["images"].items()
                                                        if not k.startswith("normal")}})
    out["site"] = tmp_path_factory.mktemp("c") / "site.h5"
    out["summary"] = extract(out["manifest"], out["site"], tiny_backbone, views=BOX_VIEWS, progress=False,
                             log=lambda m: None)
    return out


def test_open_source_by_kind(tmp_path):
    (tmp_path / "x.csv").write_text("file,label\n")
    assert isinstance(open_source(tmp_path), FolderSource)
    assert isinstance(open_source(tmp_path / "x.csv"), ManifestSource)
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(Exception, match="neither a dataset folder nor a CSV manifest"):
        open_source(tmp_path / "notes.txt")


def test_manifest_problems_are_named_and_the_rest_used(tmp_path):
    Image.new("L", (50, 40), 90).save(tmp_path / "a.png")
    Image.new("L", (50, 40), 120).save(tmp_path / "b.png")
    Image.new("L", (50, 40), 150).save(tmp_path / "c.png")
    (tmp_path / "m.csv").write_text(
        "file,label,patient,x0,y0,x1,y1\n"
        "a.png,Malignant,P1,5,5,20,20\n"
        "b.png,benign,P1,5,5,60,20\n"     # box outside the 50x40 image: used without the box
        "c.png,cyst,,,,,\n"               # unknown label
        "gone.png,benign,,,,,\n"          # missing file
        "a.png,malignant,,,,,\n")         # listed twice
    ds = MF.read_manifest(tmp_path / "m.csv")
    assert [s.path for s in ds.samples] == ["a.png", "b.png"] and ds.classes == ("benign", "malignant")
    assert ds.samples[0].box == (5, 5, 20, 20) and ds.samples[1].box is None
    assert ds.samples[0].patient == ds.samples[1].patient == "P1"
    what = " | ".join(str(p) for p in ds.problems)
    for needle in ("outside the 50x40 image", "unknown label 'cyst'", "gone.png: file not found",
                   "listed twice"):
        assert needle in what
    assert not any(p.fatal for p in ds.problems)


def test_manifest_without_label_column_is_fatal(tmp_path):
    (tmp_path / "m.csv").write_text("file,outcome\na.png,benign\n")
    with pytest.raises(Exception, match="lacks the column"):
        MF.read_manifest(tmp_path / "m.csv")


def test_patient_groups_join_images_of_one_patient():
    from busi_lite.io.sources import patient_groups

    g = patient_groups([0, 1, 2, 3], ["A", None, "A", "B"])
    assert g[0] == g[2] and len({g[0], g[1], g[3]}) == 3
    # a patient bridges duplicate groups and back (transitive); the merged group takes the smallest id
    g = patient_groups([5, 5, 7, 7, 9, 3], [None, "A", "A", "B", "B", None])
    assert g.tolist() == [5, 5, 5, 5, 5, 3]


def test_manifest_boxes_make_box_views_without_masks(caches):
    with FeatureCache(caches["site"]) as fc:
        assert fc.classes == ("benign", "malignant") and not fc.has_mask.any()
        assert fc.valid("box").all() and fc.attrs["dataset_kind"] == "manifest"
        g = fc.groups
        first_two = [fc.paths.index(p) for p in sorted(fc.paths)[:2]]
        assert g[first_two[0]] == g[first_two[1]]  # patient P1 is one split group
        assert T.source_name(fc) == "cases"


def test_two_sources_each_split_on_its_own_and_never_trained_on_test(caches, monkeypatch):
    seen = []
    real = T.fit_on

    def spy(parts, *a, **kw):
        seen.append([(c.path, r.copy()) for c, r in parts])
        return real(parts, *a, **kw)

    monkeypatch.setattr(T, "fit_on", spy)
    cfg = Config(head="logreg", flip=True)
    model, card = T.fit_sources([caches["busi"], caches["site"]], cfg, seed=0, folds=3,
                                box=True)
    assert card.classes == ["normal", "benign", "malignant"]
    assert card.sources[0].name.startswith("busi") and card.sources[1].name == "cases"  # folder name, CSV stem
    tests = {}
    for p, s in zip((caches["busi"], caches["site"]), card.sources):
        with FeatureCache(p) as fc:
            sp = fc.split(0)
            tests[p] = set(sp.test.tolist())
            assert s.split_digest == sp.digest(fc.paths) and s.n_test == len(sp.test)
            assert s.counts == {c: int((fc.labels == i).sum()) for i, c in enumerate(fc.classes)}
    assert len(seen) == 1 + 3  # the model + 3 out-of-fold heads
    for parts in seen:
        for path, rows in parts:
            assert not set(rows.tolist()) & tests[path]
    assert sum(s.weight for s in card.sources) == pytest.approx(1.0)
    assert card.sources[0].weight == pytest.approx(0.5)
    assert model.box_head is not None and card.box.n_train_images > 0
    assert all(s.box_test_auc is not None for s in card.sources)
    byc, _ = T.fit_sources([caches["busi"], caches["site"]], cfg, seed=0, folds=3, source_weight="by-count")
    assert byc.card.sources[0].weight > 0.5  # BUSI has more training images


def test_site_only_model_is_two_class_and_serves(caches, tmp_path):
    from busi_lite.evaluation.external import is_training_cache
    from busi_lite.model.model import Model

    model, card = T.fit_sources([caches["site"]], Config(head="logreg"), seed=0, folds=3)
    assert card.classes == ["benign", "malignant"] and model.head.n_classes == 2
    assert card.calibration.lesion_threshold is None
    model.save(tmp_path / "m")
    m = Model.load(tmp_path / "m")
    assert m.card.sources[0].name == "cases" and m.card.trained_on()[0].startswith("cases: benign 16")
    with FeatureCache(caches["site"]) as fc:
        assert is_training_cache(m, fc)
        out = m.head.predict(fc.pooled("raw", np.arange(3)))
        assert out.proba.shape == (3, 2)


def test_train_cli_two_sources(caches, tmp_path):
    from click.testing import CliRunner

    from busi_lite.cli import main

    r = CliRunner().invoke(main, ["train", "--cache", str(caches["busi"]), "--cache", str(caches["site"]),
                                  "--head", "logreg", "--out", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    assert "source busi" in r.output and "source cases (cache" in r.output
    r = CliRunner().invoke(main, ["info", "--model", str(tmp_path / "m")])
    assert "cases: benign 16, malignant 12" in r.output


def test_unknown_source_weight_refused(caches):
    with pytest.raises(Exception, match="source_weight"):
        T.fit_sources([caches["site"]], Config(head="logreg"), source_weight="equal")


def test_site_weights_shared_with_site_cv():
    assert T.site_weights is S.site_weights


def test_train_command_rebuilds_a_multi_source_model(caches):
    from busi_lite.cli.commands import train_command

    _, card = T.fit_sources([caches["busi"], caches["site"]], Config(head="logreg"), seed=0, folds=3,
                            source_weight="by-count")
    cmd = train_command(card, "m", "ignored.h5")
    assert cmd.count("--cache") == 2 and str(caches["site"]) in cmd and "--source-weight by-count" in cmd


def test_learning_curve_never_trains_on_the_scored_fold(caches, monkeypatch):
    from busi_lite.training import curve as LC

    calls = []
    real = LC._Scorer.fit_score

    def spy(self, parts, site, rows, seed):
        calls.append(({int(i) for _, r in parts[:1] for i in r}, {int(i) for i in rows}))
        return real(self, parts, site, rows, seed)

    monkeypatch.setattr(LC._Scorer, "fit_score", spy)
    with FeatureCache(caches["site"]) as site:
        c = LC.learning_curve(site, Config(head="logreg"), sizes=(8, None), seeds=(0, 1), k=3, inner=2)
    assert [(p.mode, p.requested) for p in c.points] == [("whole", 8), ("whole", None), ("box", 8), ("box", None)]
    for p in c.points:
        assert 0 <= p.auc_lo <= p.auc <= p.auc_hi <= 1 and 0 <= p.recall_lo <= p.recall <= p.recall_hi <= 1
        assert p.n_images == 28 and p.site_cases <= (8 if p.requested else 28)
    assert all(not (tr & te) for tr, te in calls) and calls
    assert c.sentence().startswith(f"with {c.points[-1].site_cases} boxed cases")  # the largest (none reaches 100)


def test_site_cv_curve_command_writes_json_and_figure(caches, tmp_path):
    from click.testing import CliRunner

    from busi_lite.cli import main

    r = CliRunner().invoke(main, ["site-cv", "--site-cache", str(caches["site"]), "--head", "logreg", "--k", "3",
                                  "--curve", "8,all", "--seeds", "1", "--curve-modes", "whole",
                                  "--out", str(tmp_path / "curve")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "curve.json").is_file() and (tmp_path / "curve.png").is_file()
    assert r.output.strip().splitlines()[-1].startswith("With ")


def test_threads_do_not_change_the_model(caches):
    cfg = Config(head="logreg")
    a, ca = T.fit_sources([caches["busi"], caches["site"]], cfg, seed=1, folds=3, box=True, jobs=1)
    b, cb = T.fit_sources([caches["busi"], caches["site"]], cfg, seed=1, folds=3, box=True, jobs=2)
    np.testing.assert_array_equal(ca.test_predictions.proba, cb.test_predictions.proba)
    assert ca.calibration == cb.calibration and ca.box.malignant_threshold == cb.box.malignant_threshold
    for k, v in a.head.params.items():
        np.testing.assert_array_equal(v, b.head.params[k])


def test_train_data_extracts_once_and_again_when_the_manifest_changes(caches, tiny_backbone, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from busi_lite.cli import main

    monkeypatch.setenv("BUSI_LITE_BACKBONE", str(tiny_backbone))
    monkeypatch.chdir(tmp_path)
    args = ["train", "--data", str(caches["manifest"]), "--head", "logreg", "--out", "m"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0, r.output
    assert "extracting it once" in r.output and (tmp_path / "cache" / "cases_features.h5").is_file()
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0 and "extract" not in r.output  # the cache matches the manifest: reused as is
    text = caches["manifest"].read_text()
    caches["manifest"].write_text(text.replace(",P2,", ",P1,", 1))  # a patient changes: new listing
    try:
        r = CliRunner().invoke(main, args)
    finally:
        caches["manifest"].write_text(text)
    assert r.exit_code == 0 and "extracting again" in r.output


def test_site_model_evaluates_and_calibrates_on_a_manifest(caches, tiny_backbone, tmp_path, monkeypatch):
    """A two-class site model is a normal model: evaluate and calibrate read a manifest of other cases
    (here: a second manifest over some of the same files, so the split digest differs)."""
    from click.testing import CliRunner

    from busi_lite.cli import main

    monkeypatch.setenv("BUSI_LITE_BACKBONE", str(tiny_backbone))
    monkeypatch.chdir(tmp_path)
    model, _ = T.fit_sources([caches["site"]], Config(head="logreg"), seed=0, folds=3)
    model.save(tmp_path / "site_model")
    lines = caches["manifest"].read_text().splitlines()
    other = caches["manifest"].with_name("others.csv")
    other.write_text("\n".join(lines[:1] + lines[1::2]) + "\n")
    r = CliRunner().invoke(main, ["evaluate", "--model", str(tmp_path / "site_model"), "--data", str(other)])
    assert r.exit_code == 0, r.output
    assert "AUC" in r.output
    r = CliRunner().invoke(main, ["calibrate", "--model", str(tmp_path / "site_model"), "--data", str(other),
                                  "--target-recall", "0.9", "--out", str(tmp_path / "calibrated")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "calibrated.json").is_file()


def test_train_command_gives_dataset_folders_as_data():
    from busi_lite.cli.commands import train_command

    card = {"config": {"head": "logreg"}, "split": {"seed": 0},
            "sources": [{"name": "busi", "kind": "cache", "location": "/data/busi"},
                        {"name": "site", "kind": "cache", "location": "cache/site.h5"},
                        {"name": "cases", "kind": "manifest", "location": "h/cases.csv"}]}
    cmd = train_command(card, "m", "x.h5")
    assert "--data /data/busi" in cmd and "--cache cache/site.h5" in cmd and "--data h/cases.csv" in cmd
