"""Backbones by name: :class:`BackboneSpec`, the contract a frozen ONNX feature extractor fulfils.

A spec names the file and its SHA-256, the square input size in pixels, the feature grid
(``grid`` x ``grid`` cells) and the feature width, the preprocessings whose output it accepts
(busi_lite.features.preprocess names), and the ONNX input/output names. Layout NHWC and input
range [-1, 1] are what every preprocessing produces, so every spec states them.

Registry: ``register(spec)`` adds one; ``get_spec(name)``, ``spec_for_sha(sha256)`` find one.
Today one backbone is registered: :data:`DEFAULT`, the packaged MobileNetV2 (alpha 0.35, 224).
Another backbone is one ``register(BackboneSpec(...))`` call (README "Add a backbone").

Where the spec goes: feature caches store it (attr ``backbone_spec``, JSON), model cards store
it (field ``backbone``; a card without one was made with :data:`DEFAULT`), and loading either
checks that the stored spec is the registered one of that name. A backbone file whose SHA-256
is not registered (a custom export, the tests' tiny backbones) is held to :data:`DEFAULT`'s
contract; its own SHA-256 is what caches and models pin (``backbone_sha256``).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, fields

from busi_lite.common.errors import ConfigError
from busi_lite.common.resources import PACKAGED_NAME

# Names of busi_lite.features.preprocess's preprocessings (that module checks it knows every one).
PREPROCESS_V1 = "tm-centercrop-bilinear-aa-v1"
PREPROCESS_V2 = "gray-p1p99-centercrop-bilinear-aa-v2"


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone's contract: ``features(x [N,S,S,3] in [-1,1]) -> [N,G,G,D]`` (S = input_size,
    G = grid, D = n_features), input/output named ``input_name``/``output_name``."""
    name: str                    # registry key, stored in caches and model cards
    file: str                    # file name of the .onnx
    sha256: str                  # SHA-256 of that file (64 hex digits)
    input_size: int              # square input side, pixels
    grid: int                    # feature grid side (cells per row and per column)
    n_features: int              # feature width D per cell (and of the pooled vector)
    preprocessings: tuple        # preprocessing names whose output this backbone accepts
    input_name: str = "input"
    output_name: str = "features"
    layout: str = "NHWC"
    input_range: tuple = (-1.0, 1.0)
    how_to_get: str = ""         # where the file comes from (printed when it is missing or does not fit)

    def __post_init__(self):
        object.__setattr__(self, "preprocessings", tuple(self.preprocessings))
        object.__setattr__(self, "input_range", tuple(float(v) for v in self.input_range))
        problems = []
        for k in ("name", "file", "input_name", "output_name"):
            if not isinstance(getattr(self, k), str) or not getattr(self, k):
                problems.append(f"{k} must be a non-empty string")
        if not isinstance(self.sha256, str) or not re.fullmatch("[0-9a-f]{64}", self.sha256):
            problems.append(f"sha256 must be 64 lowercase hex digits, got {self.sha256!r}")
        for k in ("input_size", "grid", "n_features"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                problems.append(f"{k} must be a positive integer, got {v!r}")
        if not problems and self.input_size % self.grid:
            problems.append(f"input_size {self.input_size} must be a multiple of grid {self.grid} (whole cells)")
        if not self.preprocessings or not all(isinstance(p, str) for p in self.preprocessings):
            problems.append("preprocessings must name at least one preprocessing")
        if self.layout != "NHWC":
            problems.append(f"layout {self.layout!r}: busi-lite feeds NHWC only")
        if self.input_range != (-1.0, 1.0):
            problems.append(f"input_range {self.input_range}: every busi-lite preprocessing gives [-1, 1]")
        if problems:
            raise ConfigError(f"backbone spec {self.name!r}: " + "; ".join(problems),
                              "fix the BackboneSpec registration", param="backbone")

    @property
    def feature_shape(self) -> list:
        """[grid, grid, n_features]: one image's features (what model cards record)."""
        return [self.grid, self.grid, self.n_features]

    @property
    def cells(self) -> int:
        """grid * grid: cells of the lesion map."""
        return self.grid * self.grid

    @property
    def cell_px(self) -> int:
        """Side of one grid cell in input pixels."""
        return self.input_size // self.grid

    def accepts(self, preprocess: str) -> bool:
        return preprocess in self.preprocessings

    def to_json(self) -> dict:
        d = asdict(self)
        d["preprocessings"], d["input_range"] = list(self.preprocessings), list(self.input_range)
        return d

    @classmethod
    def from_json(cls, d) -> BackboneSpec:
        """Strict: the known fields only, each of its type; raises ConfigError naming the problem."""
        if not isinstance(d, dict):
            raise ConfigError(f"backbone spec must be a JSON object, got {type(d).__name__}",
                              "the file is damaged: rewrite it with this busi-lite", param="backbone")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"backbone spec has unknown field(s) {unknown}",
                              "use the busi-lite version that wrote it", param="backbone")
        rng = d.get("input_range", [-1.0, 1.0])
        if not isinstance(rng, list) or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in rng):
            raise ConfigError(f"backbone spec input_range must be two numbers, got {rng!r}", param="backbone")
        pps = d.get("preprocessings")
        if not isinstance(pps, list):
            raise ConfigError(f"backbone spec preprocessings must be a list, got {pps!r}", param="backbone")
        try:
            return cls(**{**d, "preprocessings": tuple(pps), "input_range": tuple(rng)})
        except TypeError as e:  # a missing field
            raise ConfigError(f"backbone spec is incomplete ({e})", "the file is damaged: rewrite it",
                              param="backbone") from None


DEFAULT = BackboneSpec(
    name="mobilenet_v2_035_224", file=PACKAGED_NAME["backbone"],
    sha256="d75e5fd95a8aa3807fafc7d4a91f2ccea91bce75e19e4c5acae256468778294a",
    input_size=224, grid=7, n_features=1280, preprocessings=(PREPROCESS_V1, PREPROCESS_V2),
    how_to_get="get the Keras MobileNetV2 (alpha 0.35, 224) ImageNet backbone exported to ONNX "
               "(input 'input' [N,224,224,3], output 'features' [N,7,7,1280]; see README 'Backbone')")

CONTRACT = tuple(f.name for f in fields(BackboneSpec) if f.name != "how_to_get")  # what a stored spec must match

_REGISTRY: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    """Add ``spec`` to the registry (the same spec again is a no-op; another spec under a taken
    name or SHA-256 is refused)."""
    for old in _REGISTRY.values():
        if old != spec and (old.name == spec.name or old.sha256 == spec.sha256):
            raise ConfigError(f"backbone {spec.name!r} clashes with the registered {old.name!r} "
                              "(same name or SHA-256, other contract)", "give the new backbone its own name and file",
                              param="backbone")
    _REGISTRY[spec.name] = spec
    return spec


register(DEFAULT)


def registered() -> tuple:
    """Every registered spec, in registration order."""
    return tuple(_REGISTRY.values())


def get_spec(name: str) -> BackboneSpec:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown backbone {name!r}", f"register it (busi_lite.features.spec.register) or use one "
                          f"of {', '.join(_REGISTRY)}", param="backbone")
    return _REGISTRY[name]


def spec_for_sha(sha256: str) -> BackboneSpec:
    """The registered spec of the file with this SHA-256; :data:`DEFAULT` when none is registered."""
    return next((s for s in _REGISTRY.values() if s.sha256 == sha256), DEFAULT)


def check_stored(d) -> BackboneSpec:
    """A spec read back from a cache or model card: it must be the registered spec of its name
    (None: the file names no spec, which means :data:`DEFAULT`). Raises ConfigError."""
    if d is None:
        return DEFAULT
    stored = BackboneSpec.from_json(d)
    known = get_spec(stored.name)
    diff = [k for k in CONTRACT if getattr(stored, k) != getattr(known, k)]
    if diff:
        raise ConfigError(f"backbone {stored.name!r} is stored with another contract than the registered one "
                          f"(differs in {', '.join(diff)})", "re-extract the features and retrain with the "
                          "registered backbone, or register the stored one under its own name", param="backbone")
    return known
