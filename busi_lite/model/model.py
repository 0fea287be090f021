"""A trained model: head + model card (operating point, flag thresholds, metadata) + OOD statistics.

Saved as two files side by side:
  NAME.npz   arrays only (head params "head.<name>", OOD statistics "ood.<name>")
  NAME.json  the model card (busi_lite.model.card.ModelCard): config, class names, backbone SHA-256,
             feature shape, preprocessing version, split seed and digest, metrics, curves,
             thresholds, and ``weights_sha256``: the SHA-256 of the .npz bytes.
The pair is tied by that hash: a reader that meets a torn pair is refused, never given one
model's weights with another's thresholds. A save holds ``.NAME.lock`` (a second writer is
refused at once, naming the holder), writes the new pair completely as NAME.npz.new +
NAME.json.new (each atomically, busi_lite.common.atomic), then renames NAME.npz.new over
NAME.npz (the commit) and NAME.json.new over NAME.json. Recovery rule, used by load and by
the next save: a NAME.json.new whose weights_sha256 is the current NAME.npz's (and no
NAME.npz.new) belongs to a committed save: load reads it as the card, the next save renames
it into place; any other .new file is an uncommitted save's: ignored, removed by the next
save. So a kill at any moment leaves the old model or the new one, never neither.
Loading validates the card strictly (finite thresholds, OOD statistics present), opens the
.npz ONCE (one file handle: hash and arrays come from the same bytes), refuses a file
much larger than its expected members, checks the hash, checks every array's shape
from the member headers against the card BEFORE reading it, reads only the expected
members (never with pickle), and refuses weights or OOD statistics that are not finite.
Every refusal is a ModelError naming the file and the field or array.

Backbone: the card's ``backbone`` (a features.spec.BackboneSpec; absent = features.spec.DEFAULT)
must be the registered spec of its name; ``feature_shape`` and array shapes follow it.
Preprocessing: the card's ``preprocess_version`` names one of busi_lite.features.preprocess's
preprocessings (v1, v2) the backbone accepts; a model with an unknown name is refused. ``model.preprocessing``
is what serving must feed the backbone, ``model.flip`` (the training config's ``flip``,
False when absent) says whether serving averages the image and its mirror.

Optional lesion-box head (lesion-box mode): ``Model.box_head`` (busi_lite.heads.box.BoxHead,
classes benign/malignant) with its card section ``box`` (card.BoxInfo: own threshold,
training and test figures). Its arrays are saved in the same .npz as ``box_head.<name>``,
so ``weights_sha256`` covers them too; a card with a ``box`` section and no arrays (or
arrays without the section) is refused. ``supports_box`` is True only with both.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from busi_lite.common.atomic import atomic_path, os_error, write_lock
from busi_lite.common.constants import CLASSES
from busi_lite.common.errors import ConfigError, ModelError
from busi_lite.features.preprocess import Preprocessing
from busi_lite.features.spec import DEFAULT, BackboneSpec
from busi_lite.heads import HeadOutput, get_head
from busi_lite.heads.box import BoxHead
from busi_lite.model.card import FORMAT, ModelCard, OODInfo
from busi_lite.model.records import RecordError

DAMAGED = "the model is damaged; retrain or reinstall it"
TORN = "save again or reinstall"
_NPZ_SLACK = 1 << 20  # bytes an .npz may hold beyond its expected members (zip directory, .npy headers)
MAX_ARRAY_BYTES = 256 << 20  # a card declaring more array data than this (as float64) is refused
_NPY_HEADER = 4096           # bytes an .npy member may hold besides its array data
DEFAULT_MODEL = "busi_lite_default"  # stem of the packaged default model (busi_lite.common.resources)
ENV_MODEL = "BUSI_LITE_MODEL"


def mirror_average(out: HeadOutput, mirrored: HeadOutput) -> HeadOutput:
    """Flip averaging of one head's outputs on N images and on their mirrors: proba [N,C] the
    mean of the two; lesion [N,G*G] (a square GxG map, row-major) the mean with the mirror's map
    mirrored back first (None when the head has no lesion map). Dtypes follow numpy's rules."""
    lesion = None
    if out.lesion is not None:
        m = np.asarray(mirrored.lesion)
        g = math.isqrt(m.shape[-1])
        if g * g != m.shape[-1]:
            raise ValueError(f"lesion maps of {m.shape[-1]} cells are not a square grid")
        back = m.reshape(-1, g, g)[:, :, ::-1].reshape(len(out.lesion), g * g)
        lesion = (out.lesion + back) / 2
    return HeadOutput((out.proba + mirrored.proba) / 2, lesion)


@dataclass
class OOD:
    """Out-of-distribution score on pooled features: squared Mahalanobis distance in the
    top-k PCA subspace of the training features plus the residual energy outside it
    (scaled by its mean variance per dimension), each part divided by its dimension count
    and the two averaged: about 1 for training-like images, large for unlike ones."""
    mean: np.ndarray        # [D]
    components: np.ndarray  # [k,D] orthonormal rows
    scales: np.ndarray      # [k] std of the training data along each component
    resid_var: float        # mean residual variance per remaining dimension
    threshold: float = float("inf")

    @classmethod
    def fit(cls, X: np.ndarray, k: int = 32) -> "OOD":
        """X [N,D] pooled training features."""
        X = np.asarray(X, np.float64)
        mu = X.mean(axis=0)
        Xc = X - mu
        (n, D), m = Xc.shape, min(Xc.shape)
        k = min(k, m - 1)
        # the top-k principal axes from the smaller Gram matrix (a third of an SVD's time here):
        # Xc = U S Vt, so Xc Xc^T = U S^2 U^T (n <= D: Vt = S^-1 U^T Xc) or Xc^T Xc = V S^2 Vt
        lam, E = np.linalg.eigh(Xc @ Xc.T if n <= D else Xc.T @ Xc)
        lam, E = lam[::-1][:k], E[:, ::-1][:, :k]
        if k and lam[-1] > 1e-9 * lam[0]:
            vt = E.T @ Xc / np.sqrt(lam)[:, None] if n <= D else E.T
        else:  # (nearly) rank-deficient within the top k: the SVD's orthonormal axes
            _, sv, vt = np.linalg.svd(Xc, full_matrices=False)
            lam, vt = sv[:k] ** 2, vt[:k]
        var = lam / max(n - 1, 1)
        resid = (np.einsum("ij,ij->", Xc, Xc) / max(n - 1, 1) - var.sum()) / max(D - k, 1)
        return cls(mu.astype(np.float32), vt.astype(np.float32),
                   np.sqrt(var).astype(np.float32) + 1e-6, float(max(resid, 1e-12)))

    def score(self, X: np.ndarray) -> np.ndarray:
        """X [N,D] -> [N] distance (>= 0)."""
        return self.score_and_coords(X)[0]

    def score_and_coords(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """X [N,D] -> (distance [N], scaled PCA coordinates [N,k] = (X - mean) @ components.T / scales,
        float64: the site-shift check's input, serving.shift.ood_coords, from the same projection)."""
        xc = np.asarray(X, np.float64) - self.mean
        z = xc @ self.components.T.astype(np.float64)              # [N,k]
        resid = xc - z @ self.components.astype(np.float64)         # [N,D]
        k, D = self.components.shape
        u = z / self.scales
        inside = (u ** 2).sum(axis=1) / k                           # ~1 for training-like images
        outside = (resid ** 2).sum(axis=1) / self.resid_var / (D - k)  # ~1 as well
        return (inside + outside) / 2, u


@dataclass
class Model:
    """head (a registered head) + card (ModelCard, or None for a bare head) + ood (OOD | None)
    + box_head (BoxHead | None: the lesion-box mode, described by card.box).

    ``digest``: SHA-256 of the whole model as stored, the card's bytes then the weights' bytes
    (``cat NAME.json NAME.npz | sha256sum``); set by :meth:`load`, computed from what :meth:`save`
    would write for a model built in memory. A copy made with ``dataclasses.replace`` (e.g. a new
    threshold in its card) gets its own digest."""
    head: object
    card: ModelCard | None = None
    ood: OOD | None = None
    box_head: BoxHead | None = None
    _digest: str | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def digest(self) -> str | None:
        """SHA-256 (hex) of card + weights bytes; None for a model without a card or OOD statistics."""
        if self._digest is None and self.card is not None and self.ood is not None:
            blob, text = self.to_bytes()
            self._digest = hashlib.sha256(text.encode() + blob).hexdigest()
        return self._digest

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.card.classes) if self.card is not None else CLASSES

    @property
    def has_lesion_map(self) -> bool:
        return bool(self.head.has_lesion_map)

    @property
    def spec(self) -> BackboneSpec:
        """The backbone spec of the model's features (features.spec.DEFAULT without a card)."""
        return self.card.backbone_spec if self.card is not None else DEFAULT

    @property
    def preprocessing(self) -> Preprocessing:
        """The preprocessing the model was trained with (card.preprocess_version; v1 without a card),
        at its backbone's input size."""
        name = self.card.preprocess_version if self.card is not None else DEFAULT.preprocessings[0]
        return Preprocessing.named(name, self.spec.input_size)

    @property
    def flip(self) -> bool:
        """Flip averaging: the training config's ``flip`` (False when the config has none)."""
        return bool(getattr(self.card.config, "flip", False)) if self.card is not None else False

    @property
    def supports_box(self) -> bool:
        return self.box_head is not None and self.card is not None and self.card.box is not None

    def _cells(self, feats) -> np.ndarray:
        f, s = np.asarray(feats), self.spec
        if f.ndim < 2 or len(f) == 0 or f.shape[-1] != s.n_features or f.size // len(f) != s.cells * s.n_features:
            raise ModelError(f"features of shape {f.shape} do not fit the model",
                             f"give features of shape [N,{s.grid},{s.grid},{s.n_features}] from the model's backbone")
        return f.reshape(len(f), s.cells, s.n_features).astype(np.float32)

    def predict_features(self, feats: np.ndarray, mirrored: np.ndarray | None = None) -> dict:
        """feats [N,G,G,D] or [N,G*G,D] -> {proba [N,C], pooled [N,D], lesion [N,G*G] | None}
        (G, D: the backbone spec's grid and n_features).

        ``mirrored``: features of the mirrored inputs (flip averaging): proba is then the mean of
        the two passes' probabilities and lesion the mean of the two maps, the mirror's map
        mirrored back first. ``pooled`` is always the unmirrored pass's (OOD statistics)."""
        cells = self._cells(feats)
        pooled = cells.mean(axis=1)
        out = self.head.predict(type(self.head).feature_inputs(cells))
        proba, lesion = out.proba, out.lesion
        if mirrored is not None:
            cm = self._cells(mirrored)
            if len(cm) != len(cells):
                raise ModelError(f"{len(cm)} mirrored feature rows for {len(cells)} images", "give one per image")
            om = self.head.predict(type(self.head).feature_inputs(cm))
            avg = mirror_average(HeadOutput(np.asarray(proba, np.float64),
                                            None if lesion is None else np.asarray(lesion, np.float64)), om)
            proba, lesion = avg.proba, avg.lesion
        return {"proba": proba, "pooled": pooled, "lesion": lesion}

    def predict_box(self, whole, crop, whole_mirrored=None, crop_mirrored=None) -> np.ndarray:
        """Box head: pooled whole-image [N,D] and lesion-crop [N,D] features (and their mirrors'
        when card.box.flip) -> proba [N,2] (benign, malignant), the two passes averaged."""
        if not self.supports_box:
            raise ModelError("this model has no lesion-box head", "train one with busi-lite train-box")
        p = self.box_head.predict_proba(BoxHead.feature_inputs(whole, crop))
        if whole_mirrored is not None:
            p = (p + self.box_head.predict_proba(BoxHead.feature_inputs(whole_mirrored, crop_mirrored))) / 2
        return p

    # ------------------------------------------------------------ persistence
    def save(self, path) -> tuple[Path, Path]:
        """Write NAME.npz, then NAME.json (each via a unique temp file + rename); the card
        records the SHA-256 of the .npz bytes, so a reader never mixes two saves."""
        npz, js = model_paths(path)
        blob, text = self.to_bytes()
        new_npz, new_js = _pending(npz), _pending(js)
        try:
            npz.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise os_error(npz.parent, e, "creating the folder") from None
        with write_lock(_lock_path(npz), f"model {npz.with_suffix('')}"):
            _recover(npz, js, locked=True)
            try:
                with atomic_path(new_npz) as tmp:
                    tmp.write_bytes(blob)
                with atomic_path(new_js) as tmp:
                    tmp.write_text(text)
            except BaseException:
                for p in (new_npz, new_js):       # nothing half-saved stays behind
                    p.unlink(missing_ok=True)
                raise
            try:
                os.replace(new_npz, npz)          # the commit: from here on, the new model is the model
                os.replace(new_js, js)
            except OSError as e:
                raise os_error(npz, e, "installing the saved model") from None
        return npz, js

    def to_bytes(self) -> tuple[bytes, str]:
        """(NAME.npz bytes, NAME.json text) as :meth:`save` writes them."""
        if self.card is None:
            raise ModelError("a model without a card cannot be saved", "build it with experiments.fit_model")
        if self.ood is None:
            raise ModelError("a model without OOD statistics cannot be saved", "build it with experiments.fit_model")
        if (self.box_head is None) != (self.card.box is None):
            raise ModelError("a box head needs its card section 'box' and the reverse",
                             "add the box head with busi_lite.training.box.add_box_head")
        arrays = {f"head.{k}": v for k, v in self.head.params.items()}
        if self.box_head is not None:
            arrays.update({f"box_head.{k}": v for k, v in self.box_head.params.items()})
        arrays.update({"ood.mean": self.ood.mean, "ood.components": self.ood.components, "ood.scales": self.ood.scales})
        bad = [k for k, v in arrays.items() if not np.isfinite(v).all()]
        if bad:
            raise ModelError(f"array {bad[0]!r} is not finite (NaN/inf)", "retrain with a lower learning rate")
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        blob = buf.getvalue()
        ood = OODInfo(float(self.ood.resid_var), float(self.ood.threshold))
        box = None if self.box_head is None else replace(self.card.box, head=self.box_head.config())
        card = replace(self.card, format=FORMAT, head=self.head.config(), ood=ood, box=box,
                       weights_sha256=hashlib.sha256(blob).hexdigest())
        return blob, json.dumps(card.to_json(), indent=1, allow_nan=True)

    @classmethod
    def load(cls, path=None) -> "Model":
        from busi_lite.common.resources import resolve  # path > $BUSI_LITE_MODEL > the packaged default
        npz, js = model_paths(resolve("model", path).path)
        card_path = _recover(npz, js, locked=False)
        for p in (npz, js):
            if not p.is_file():
                raise ModelError(f"{p}: model file not found",
                                 f"train one (busi-lite train) into {npz.with_suffix('')}, or give another model "
                                 "(NAME.npz + NAME.json)", param="model")
        try:
            try:
                card_bytes = card_path.read_bytes()
            except FileNotFoundError:
                if card_path == js:
                    raise
                card_bytes = js.read_bytes()    # the running save just renamed it into place
            meta = json.loads(card_bytes)
        except (ValueError, OSError) as e:
            raise ModelError(f"{js}: model card is damaged ({e})", "retrain the model") from e
        if not isinstance(meta, dict):
            raise ModelError(f"{js}: model card is a JSON {type(meta).__name__}, not an object", "retrain the model")
        if meta.get("format") != FORMAT:
            raise ModelError(f"{js}: model format {meta.get('format')} is not {FORMAT}", "retrain with this version")
        try:
            Preprocessing(meta.get("preprocess_version"))
        except (ConfigError, TypeError):
            raise ModelError(f"{js}: trained with preprocessing {meta.get('preprocess_version')!r}, which this "
                             "busi-lite does not know", "upgrade busi-lite, or re-extract features and retrain") from None
        try:
            card = ModelCard.from_json(meta, str(js))  # also: the backbone spec, feature shape, preprocessing
        except RecordError as e:
            raise ModelError(e.what, e.fix) from None
        n_feat = card.backbone_spec.n_features
        head_cls = get_head(card.head["kind"])
        try:
            shapes = {f"head.{k}": v for k, v in head_cls.param_shapes(card.head).items()}
            if card.box is not None:
                shapes.update({f"box_head.{k}": v for k, v in BoxHead.param_shapes(card.box.head).items()})
        except ConfigError as e:
            raise ModelError(f"{js}: head config is invalid ({e})", "retrain the model") from None
        if card.ood is None:
            raise ModelError(f"{js}: the model card has no 'ood' (out-of-distribution statistics)", DAMAGED)
        declared = 8 * sum(int(np.prod(v)) for v in shapes.values())
        if declared > MAX_ARRAY_BYTES:
            raise ModelError(f"{js}: the card declares {declared / 2**20:,.0f} MB of weights, over the "
                             f"{MAX_ARRAY_BYTES >> 20} MB limit", DAMAGED)
        if card.weights_sha256 is None:
            raise ModelError(f"{js}: the model card records no weights_sha256 (written by an older busi-lite), so "
                             "its weights cannot be verified", "retrain the model or reinstall busi-lite")
        try:
            with open(npz, "rb") as fh:  # one handle: the hash and the arrays come from the same bytes
                zf = zipfile.ZipFile(fh)
                comp = _npz_header(zf, "ood.components", npz)[0]
                if len(comp) != 2 or comp[1] != n_feat or not 1 <= comp[0] <= n_feat:
                    raise ModelError(f"{npz}: ood.components has shape {comp}, expected [k,{n_feat}]", DAMAGED)
                want = dict(shapes)
                want.update({"ood.mean": (n_feat,), "ood.components": comp, "ood.scales": (comp[0],)})
                _check_size(fh, zf, want, npz)
                extra = sorted(n[:-4] for n in zf.namelist() if n.startswith("box_head.") and n[:-4] not in want)
                if extra:
                    raise ModelError(f"{npz}: holds box-head array {extra[0]!r} but the card has no 'box' section",
                                     "the weights do not belong to this card: retrain the model")
                weights_sha, whole_sha = _sha256_pair(fh, card_bytes)
                if card.weights_sha256 != weights_sha:
                    raise ModelError(f"{npz} and {js}: weights and sidecar do not belong together "
                                     "(half-written save? the weights' SHA-256 is not the one the sidecar records)", TORN)
                for k, shape in want.items():
                    got, dtype = _npz_header(zf, k, npz)
                    if got != tuple(shape) or dtype.kind != "f":
                        raise ModelError(f"{npz}: array {k!r} has shape {got} ({dtype}), the card says {tuple(shape)} "
                                         "(float)", "the weights do not belong to this card: retrain the model")
                arrays = {k: _npz_read(zf, k) for k in want}
        except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
            raise ModelError(f"{npz}: weights file is damaged ({e})", DAMAGED) from e
        for k, v in arrays.items():
            if not np.isfinite(v).all():
                raise ModelError(f"{npz}: array {k!r} holds NaN or inf", DAMAGED)
        if not (arrays["ood.scales"] > 0).all():
            raise ModelError(f"{npz}: array 'ood.scales' holds values <= 0 (the unusual-input check would be "
                             "blind)", DAMAGED)
        try:
            head = head_cls.from_params(card.head, {k[5:]: v for k, v in arrays.items() if k.startswith("head.")})
        except ValueError as e:
            raise ModelError(f"{npz}: head does not match its card ({e})", "retrain the model") from e
        box_head = None
        if card.box is not None:
            try:
                box_head = BoxHead.from_params(card.box.head, {k[9:]: v for k, v in arrays.items()
                                                               if k.startswith("box_head.")})
            except (ValueError, ConfigError) as e:
                raise ModelError(f"{npz}: box head does not match its card ({e})", "retrain the box head") from e
        ood = OOD(arrays["ood.mean"], arrays["ood.components"], arrays["ood.scales"],
                  card.ood.resid_var, card.ood.threshold)
        model = cls(head, card, ood, box_head)
        model._digest = whole_sha
        return model

    def check_backbone(self, sha256: str, what: str) -> None:
        """Refuse features from another backbone than the one the model was trained on."""
        trained = self.card.backbone_sha256 if self.card is not None else None
        if trained != sha256:
            raise ModelError(f"{what} uses backbone {sha256[:12]}..., the model was trained on "
                             f"{str(trained)[:12]}...", "use the same backbone, or retrain the model on these features")


def _npz_header(zf: zipfile.ZipFile, key: str, where) -> tuple[tuple, np.dtype]:
    """(shape, dtype) of member ``key`` of an .npz, read from the .npy header only."""
    try:
        f = zf.open(f"{key}.npy")
    except KeyError:
        raise ModelError(f"{where}: array {key!r} is missing", DAMAGED) from None
    with f:
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(f)
    return tuple(shape), np.dtype(dtype)


def _check_size(fh, zf: zipfile.ZipFile, want: dict, where) -> None:
    """Refuse an .npz much larger than its expected members (e.g. an added multi-GB member):
    it is neither hashed nor decompressed. Refuse a member whose UNCOMPRESSED size (zip
    directory) is over its shape's float64 bytes plus an .npy header: never inflated."""
    expected = 0
    for k, shape in want.items():
        try:
            info = zf.getinfo(f"{k}.npy")
        except KeyError:
            raise ModelError(f"{where}: array {k!r} is missing", DAMAGED) from None
        expected += info.compress_size
        limit = 8 * int(np.prod(shape)) + _NPY_HEADER
        if info.file_size > limit:
            raise ModelError(f"{where}: array {k!r} inflates to {info.file_size:,} bytes, its shape "
                             f"{tuple(shape)} needs at most {limit:,}", DAMAGED)
    size = fh.seek(0, io.SEEK_END)
    if size > expected + _NPZ_SLACK:
        raise ModelError(f"{where}: weights file holds {size - expected} bytes besides the model's arrays",
                         DAMAGED)


def _sha256_pair(fh, prefix: bytes) -> tuple[str, str]:
    """(SHA-256 of the file's bytes, SHA-256 of ``prefix`` followed by them), one read."""
    fh.seek(0)
    h, whole = hashlib.sha256(), hashlib.sha256(prefix)
    for block in iter(lambda: fh.read(1 << 20), b""):
        h.update(block)
        whole.update(block)
    return h.hexdigest(), whole.hexdigest()


def _npz_read(zf: zipfile.ZipFile, key: str) -> np.ndarray:
    with zf.open(f"{key}.npy") as f:
        return np.lib.format.read_array(f, allow_pickle=False)


def _pending(p: Path) -> Path:
    """Where a save writes the new ``p`` before its commit (NAME.npz.new, NAME.json.new)."""
    return p.with_name(p.name + ".new")


def _lock_path(npz: Path) -> Path:
    return npz.with_name(f".{npz.stem}.lock")


def _file_sha256(p: Path) -> str | None:
    try:
        with open(p, "rb") as fh:
            return _sha256_pair(fh, b"")[0]
    except OSError:
        return None


def _recover(npz: Path, js: Path, locked: bool) -> Path:
    """Apply the recovery rule (module docstring); -> the card to read (``js`` or NAME.json.new).
    ``locked``: the caller holds the model's write lock (a save): leftovers are removed."""
    new_npz, new_js = _pending(npz), _pending(js)
    if not new_js.exists() and not (locked and new_npz.exists()):
        return js
    try:
        recorded = json.loads(new_js.read_text()).get("weights_sha256")
    except (OSError, ValueError, AttributeError):
        recorded = None
    committed = recorded is not None and not new_npz.exists() and recorded == _file_sha256(npz)
    if locked:
        if committed:
            os.replace(new_js, js)
        else:
            for p in (new_npz, new_js):
                p.unlink(missing_ok=True)
        return js
    return new_js if committed else js      # readers never rename: the next save finishes the swap


def model_paths(path) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix in (".npz", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".npz"), p.with_name(p.name + ".json")
