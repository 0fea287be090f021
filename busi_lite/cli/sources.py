"""Training sources from the command line: ``--data DIR_OR_MANIFEST`` and ``--cache`` (each repeatable).

``--data`` names a dataset source (a BUSI-layout folder or a CSV manifest, busi_lite.io.sources);
its features come from the ``--cache`` given at the same position, else from
cache/<source name>_features[_v2].h5. A cache that is missing, of another preprocessing, or
extracted from another listing (files, labels, patients, boxes: io.sources.samples_digest) is
(re)extracted first (incrementally: unchanged images are reused). An image replaced under the
same name is not noticed here: run ``busi-lite extract`` after replacing images. ``--cache``
alone: each cache is a source (named after the dataset it was extracted from).
"""

from __future__ import annotations

from pathlib import Path

from busi_lite.common.errors import BusiError


def source_cache(src, cache, preprocess: str, log):
    """The FeatureCache of dataset source ``src``, extracted first when missing or out of date."""
    from busi_lite.features.cache import FeatureCache, default_cache, extract
    from busi_lite.features.preprocess import Preprocessing
    from busi_lite.features.views import ALL_VIEWS

    path = Path(cache) if cache else default_cache(preprocess, stem=src.name)
    if path.is_file():
        from busi_lite.io.sources import samples_digest

        fc = FeatureCache(path)
        if fc.attrs.get("samples_digest") == samples_digest(src.discover()) and fc.preprocess_version == \
                Preprocessing.named(preprocess).name:
            return fc
        fc.close()
        log(f"{path}: was not extracted from {src.path} as it is now (files, labels, patients or boxes "
            "differ); extracting again (unchanged images are reused)")
    else:
        log(f"{path}: no feature cache of {src.path} yet; extracting it once (all views)")
    extract(src.path, path, views=ALL_VIEWS, preprocess=preprocess, log=log)
    return FeatureCache(path)


def training_sources(data, caches, preprocess: str, log) -> list:
    """[TrainingSource] for ``--data`` / ``--cache`` (see the module docstring); [] when neither is given."""
    from busi_lite.features.cache import FeatureCache
    from busi_lite.io.sources import open_source
    from busi_lite.training.sources import TrainingSource, as_sources

    data, caches = list(data or ()), list(caches or ())
    if not data:
        return as_sources([FeatureCache(c) for c in caches])
    if caches and len(caches) != len(data):
        raise BusiError(f"{len(data)} data source(s) but {len(caches)} cache(s)",
                        "give one cache per data source, in the same order, or no cache at all", param="cache")
    out = []
    for i, d in enumerate(data):
        src = open_source(d)
        fc = source_cache(src, caches[i] if caches else None, preprocess, log)
        out.append(TrainingSource(src.name, fc, src.kind, str(Path(d))))
    return as_sources(out)
