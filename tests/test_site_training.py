"""Site training (issue 11.4): folds never leak, BUSI test images never train, sites balanced."""
from __future__ import annotations

import numpy as np
import pytest
from synth import make_busi_tree

from busi_lite.features.cache import FeatureCache, extract
from busi_lite.model.config import Config
from busi_lite.training import site as S


@pytest.fixture(scope="module")
def caches(tmp_path_factory, tiny_backbone):
    out = {}
    for name, counts, seed in (("busi", (8, 14, 12), 1), ("site", (0, 16, 12), 2)):
        root = tmp_path_factory.mktemp(name)
        make_busi_tree(root, n_per_class=counts, seed=seed, extras=False)
        if name == "site":
            for f in (root / "normal").glob("*"):
                f.unlink()
            (root / "normal").rmdir()
        path = tmp_path_factory.mktemp("c") / f"{name}.h5"
        extract(root, path, tiny_backbone, views=("flip",), progress=False, log=lambda m: None)
        out[name] = path
    return out


def test_site_alone_every_image_once_out_of_fold(caches, monkeypatch):
    seen = []
    real = S.fit_on

    def spy(parts, *a, **kw):
        seen.append([(c.path.name, set(r.tolist())) for c, r in parts])
        return real(parts, *a, **kw)

    monkeypatch.setattr(S, "fit_on", spy)
    with FeatureCache(caches["site"]) as site:
        assert site.classes == ("benign", "malignant")
        r = S.site_cv(site, Config.build(head="logreg", flip=True), k=4, seed=0, n_resamples=200)
        assert r.mode == "site" and r.n == len(site) and r.k == 4
        assert 0 <= r.auc_lo <= r.auc <= r.auc_hi <= 1 and r.auc > 0.6  # synthetic classes separate
        folds = [s[0][1] for s in seen]
        assert len(folds) == 4
        held = [set(range(len(site))) - f for f in folds]  # each fold's held-out images
        assert sorted(i for h in held for i in h) == list(range(len(site)))  # each once


def test_busi_plus_site_uses_only_busi_training_images(caches, monkeypatch):
    seen = []
    real = S.fit_on

    def spy(parts, *a, **kw):
        seen.append(parts)
        return real(parts, *a, **kw)

    monkeypatch.setattr(S, "fit_on", spy)
    with FeatureCache(caches["site"]) as site, FeatureCache(caches["busi"]) as busi:
        r = S.site_cv(site, Config.build(head="logreg"), k=3, seed=0, busi=busi, busi_seed=0, site_cases=10,
                      n_resamples=200)
        test = set(busi.split(0).test.tolist())
        for parts in seen:
            (sc, srows), (bc, brows) = parts
            assert bc is busi and not set(brows.tolist()) & test
            assert len(srows) <= 10
        assert r.mode == "busi+site" and r.busi_test_auc is not None and r.balance_sites


def test_site_weights_balance_sites():
    w = S.site_weights([np.ones(30), np.ones(10) * 2], True)
    assert w.mean() == pytest.approx(1.0)
    assert w[:30].sum() == pytest.approx(w[30:].sum())
    plain = S.site_weights([np.ones(30), np.ones(10)], False)
    np.testing.assert_allclose(plain, 1.0)


def test_unknown_site_class_refused(caches):
    with FeatureCache(caches["busi"]) as busi:
        with pytest.raises(Exception, match="not among"):
            S._class_map(("benign", "cyst"), busi.classes)


def test_train_on_a_site_folder_gets_a_two_class_head(caches, tmp_path):
    """`train` on a benign/malignant folder: a real benign/malignant head (no untrained normal output);
    ClassMapped still maps a site's labels by name into BUSI's classes for mixed use."""
    from click.testing import CliRunner

    from busi_lite.cli import main
    from busi_lite.common.constants import CLASSES
    from busi_lite.model.model import Model
    from busi_lite.training.core import with_classes

    with FeatureCache(caches["site"]) as site:
        mapped = with_classes(site, CLASSES)
        assert mapped.classes == CLASSES and set(mapped.labels) == {1, 2}
        assert [CLASSES[i] for i in mapped.labels] == [site.classes[i] for i in site.labels]
        sp = mapped.split(0)
        assert not set(sp.train) & set(sp.test)
    r = CliRunner().invoke(main, ["train", "--cache", str(caches["site"]), "--head", "logreg", "--flip",
                                  "--out", str(tmp_path / "m")])
    assert r.exit_code == 0, r.output
    m = Model.load(tmp_path / "m")
    assert m.classes == ("benign", "malignant") and m.card.config.flip and m.head.n_classes == 2
    assert len(m.card.sources) == 1 and m.card.sources[0].counts == {"benign": 16, "malignant": 12}
    # train ends by saying how to use what it saved; results name the model, its digest and training site
    from busi_lite.model.provenance import provenance

    pv = provenance(m)
    assert f"use it: busi-lite predict IMAGE --model {tmp_path / 'm'}" in r.stdout and "BUSI_LITE_MODEL=" in r.stdout
    assert f"model {pv.name} (digest {pv.short_digest})" in r.stdout
    assert pv.training_sites == (m.card.sources[0].name,) and m.card.sources[0].name in pv.threshold_source


def test_site_cv_command(caches):
    from click.testing import CliRunner

    from busi_lite.cli import main

    r = CliRunner().invoke(main, ["site-cv", "--site-cache", str(caches["site"]), "--busi-cache", str(caches["busi"]),
                                  "--head", "logreg", "--k", "3", "--json"])
    assert r.exit_code == 0, r.output
    assert '"mode": "busi+site"' in r.output and '"busi_test_auc"' in r.output
