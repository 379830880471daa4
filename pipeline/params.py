"""Typed parameters for every stage, loaded and validated once from params.yaml.

Each stage reads only its own section. Any problem (unknown key, wrong type,
value out of range) raises ParamsError with one line naming the param.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.errors import PipelineError

PARAMS_FILE = Path("params.yaml")


class ParamsError(PipelineError):
    """A value in params.yaml is missing, unknown, mistyped or out of range."""


# Search engines (the rest of download.source: synthetic, urls, folder).
ENGINES = ("google", "bing", "ddg", "openverse")
SOURCES = ("synthetic", *ENGINES, "urls", "folder")
# Sources that can share one run; synthetic and folder stand alone.
COMBINABLE = (*ENGINES, "urls")


@dataclass(frozen=True)
class DownloadParams:
    source: str | list[str] = "synthetic"
    count: int = 400
    seed: int = 0
    queries: list[str] = field(default_factory=lambda: ["super mario", "mario", "マリオ"])
    limit: int = 100
    urls_file: str = ""
    folder: str = ""
    chromedriver: str = "/usr/bin/chromedriver"
    chrome: str = ""
    search_url: str | dict[str, str] = ""
    market: str = "en-US"
    licenses: list[str] = field(default_factory=list)
    user_agent: str = "mario-gan/0.1 (+https://github.com/mario-gan/mario-gan; image dataset builder)"
    workers: int = 16
    per_host: int = 4
    timeout: float = 30.0
    retries: int = 3
    max_bytes: int = 20_000_000
    min_side: int = 64
    ca_bundle: str = ""

    @property
    def sources(self) -> list[str]:
        """download.source as a list: `bing` and `[bing]` are the same."""
        return [self.source] if isinstance(self.source, str) else list(self.source)

    def engine_url(self, engine: str) -> str:
        """download.search_url for one engine: its entry in a mapping, or the string for a one-engine run."""
        if isinstance(self.search_url, dict):
            return self.search_url.get(engine, "")
        return self.search_url if self.sources == [engine] else ""

    def validate(self) -> None:
        src = self.sources
        _check(
            bool(src) and all(isinstance(s, str) and s in SOURCES for s in src),
            "download.source",
            f"must be one of {', '.join(SOURCES)}, or a list of {', '.join(COMBINABLE)}; got {self.source!r}",
        )
        _check(
            len(src) == 1 or all(s in COMBINABLE for s in src),
            "download.source",
            f"only {', '.join(COMBINABLE)} can be combined in a list; got {self.source!r}",
        )
        _check(len(set(src)) == len(src), "download.source", f"lists a source twice: {self.source!r}")
        _check(self.count >= 1, "download.count", f"must be at least 1, got {self.count}")
        q = self.queries
        _check(
            isinstance(q, list) and all(isinstance(s, str) and s.strip() for s in q),
            "download.queries",
            f"must be a list of search queries like ['mario', 'super mario'], got {q!r}",
        )
        engines = [s for s in src if s in ENGINES]
        if engines:
            _check(bool(q), "download.queries", f"must list at least one query for source {engines[0]}")
        _check(1 <= self.limit <= 1000, "download.limit", f"must be 1..1000 per query, got {self.limit}")
        if "urls" in src:
            _check(bool(self.urls_file), "download.urls_file", "must name a file of URLs for source urls")
        if "folder" in src:
            _check(bool(self.folder), "download.folder", "must name a directory of images for source folder")
        self._validate_search_url(engines)
        _check(
            isinstance(self.market, str)
            and len(self.market.split("-")) <= 2
            and self.market.replace("-", "").isalpha(),
            "download.market",
            f"must be a market code like en-US or de-DE, got {self.market!r}",
        )
        lic = self.licenses
        _check(
            isinstance(lic, list) and all(isinstance(x, str) and x.strip() for x in lic),
            "download.licenses",
            f"must be a list of licence codes like [cc0, pdm, by, by-sa] ([] = keep all), got {lic!r}",
        )
        _check(
            isinstance(self.user_agent, str) and self.user_agent.strip() and self.user_agent.isprintable(),
            "download.user_agent",
            f"must be one line naming the project and a contact URL, got {self.user_agent!r}",
        )
        _check(1 <= self.workers <= 256, "download.workers", f"must be 1..256, got {self.workers}")
        _check(1 <= self.per_host <= 64, "download.per_host", f"must be 1..64, got {self.per_host}")
        _check(0 < self.timeout <= 600, "download.timeout", f"must be 0..600 seconds, got {self.timeout}")
        _check(0 <= self.retries <= 10, "download.retries", f"must be 0..10, got {self.retries}")
        _check(self.max_bytes >= 1024, "download.max_bytes", f"must be at least 1024, got {self.max_bytes}")
        _check(self.min_side >= 1, "download.min_side", f"must be at least 1 pixel, got {self.min_side}")

    def _validate_search_url(self, engines: list[str]) -> None:
        urls = self.search_url
        if isinstance(urls, str):
            _check(
                not urls or len(engines) <= 1,
                "download.search_url",
                "is one URL but download.source lists several engines; "
                "give a mapping like {bing: URL, openverse: URL}",
            )
            urls = {engines[0]: urls} if urls and engines else {}
        _check(
            isinstance(urls, dict) and all(isinstance(v, str) for v in urls.values()),
            "download.search_url",
            f"must be a URL, or a mapping of engine to URL, got {self.search_url!r}",
        )
        for engine, url in urls.items():
            name = (
                f"download.search_url.{engine}"
                if isinstance(self.search_url, dict)
                else "download.search_url"
            )
            _check(engine in ENGINES, name, f"unknown engine (known: {', '.join(ENGINES)})")
            if engine == "google":
                _check(
                    not url or "{query}" in url,
                    name,
                    f"must contain {{query}}, or be empty for the engine's own, got {url!r}",
                )
            elif engine == "ddg":
                _fail(name, "ddg takes no URL; ddgs reads a proxy from the DDGS_PROXY environment variable")
            else:
                _check(
                    not url or url.startswith(("http://", "https://")),
                    name,
                    f"must be an http(s) URL of the engine's endpoint, or empty for its own, got {url!r}",
                )


@dataclass(frozen=True)
class DedupParams:
    hash: Literal["phash", "dhash", "whash", "ahash"] = "phash"
    hash_size: int = 8
    threshold: int = 10
    min_score: float = 0.8
    max_colour_diff: float = 28.0
    keep: Literal["largest", "earliest"] = "largest"
    workers: int = 0
    draft: bool = False

    def validate(self) -> None:
        _check(
            -1 <= self.min_score <= 1, "dedup.min_score", f"must be between -1 and 1, got {self.min_score}"
        )
        _check(self.workers >= 0, "dedup.workers", "must be 0 (all cores) or more")
        _check(
            self.hash_size in (4, 8, 16),
            "dedup.hash_size",
            f"must be 4, 8 or 16, got {self.hash_size}",
        )
        limit = self.hash_size * self.hash_size
        _check(
            0 <= self.threshold < limit,
            "dedup.threshold",
            f"must be between 0 and {limit - 1} bits for hash_size {self.hash_size}, got {self.threshold}",
        )
        _check(
            0 <= self.max_colour_diff <= 255,
            "dedup.max_colour_diff",
            f"must be between 0 and 255, got {self.max_colour_diff}",
        )


@dataclass(frozen=True)
class CurateParams:
    include_pending: bool = False


@dataclass(frozen=True)
class ResizeParams:
    size: int = 256
    mode: Literal["crop", "pad", "fit"] = "pad"
    filter: Literal["lanczos", "bicubic", "bilinear", "hamming", "box", "nearest"] = "lanczos"
    reducing_gap: float = 2.0
    background: str = "#ffffff"
    workers: int = 0

    def validate(self) -> None:
        _check(16 <= self.size <= 1024, "resize.size", f"must be 16..1024, got {self.size}")
        _check(
            self.reducing_gap == 0 or self.reducing_gap >= 1,
            "resize.reducing_gap",
            f"must be 0 (exact full-resolution resize) or at least 1.0, got {self.reducing_gap}",
        )
        _check(self.workers >= 0, "resize.workers", "must be 0 (all cores) or more")
        try:
            parse_color(self.background)
        except ValueError:
            _fail("resize.background", f"must be a colour like '#ffffff', got {self.background!r}")


@dataclass(frozen=True)
class TrainParams:
    resolution: int = 64
    channels: int = 32
    max_channels: int = 512
    latent_dim: int = 100
    upsample: Literal["deconv", "nearest"] = "deconv"
    spectral_norm: bool = False
    loss: Literal["bce", "hinge"] = "bce"
    r1_gamma: float = 0.0
    diffaugment: str = "color,translation,cutout"
    ema_kimg: float = 10.0
    batch_size: int = 32
    lr: float = 0.0002
    beta1: float = 0.5
    beta2: float = 0.999
    kimg: float = 45.0
    log_kimg: float = 2.0
    sample_kimg: float = 5.0
    checkpoint_kimg: float = 10.0
    eval_kimg: float = 0.0
    resume: bool = True
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    compile: bool = False
    seed: int = 0
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    threads: int = 0

    def validate(self) -> None:
        r = self.resolution
        _check(
            32 <= r <= 512 and r & (r - 1) == 0,
            "train.resolution",
            f"must be a power of two from 32 to 512, got {r}",
        )
        _check(1 <= self.channels <= 1024, "train.channels", f"must be 1..1024, got {self.channels}")
        _check(
            self.max_channels >= self.channels,
            "train.max_channels",
            f"must be at least train.channels ({self.channels}), got {self.max_channels}",
        )
        _check(self.latent_dim >= 1, "train.latent_dim", "must be at least 1")
        _check(self.r1_gamma >= 0, "train.r1_gamma", f"must be 0 (off) or more, got {self.r1_gamma}")
        augs = [a.strip() for a in self.diffaugment.split(",") if a.strip() and a.strip() != "none"]
        bad = [a for a in augs if a not in ("color", "translation", "cutout")]
        _check(
            not bad,
            "train.diffaugment",
            f"unknown augmentation {bad[0] if bad else ''!r}; use a comma list of color, translation, cutout, or none",
        )
        _check(self.ema_kimg >= 0, "train.ema_kimg", f"must be 0 (no EMA) or more, got {self.ema_kimg}")
        # BatchNorm in training mode needs at least two images per batch.
        _check(self.batch_size >= 2, "train.batch_size", f"must be at least 2, got {self.batch_size}")
        _check(0 < self.lr < 1, "train.lr", f"must be between 0 and 1, got {self.lr}")
        _check(0 <= self.beta1 < 1, "train.beta1", "must be in [0, 1)")
        _check(0 <= self.beta2 < 1, "train.beta2", "must be in [0, 1)")
        _check(self.kimg > 0, "train.kimg", f"must be positive, got {self.kimg}")
        for name in ("log_kimg", "sample_kimg", "checkpoint_kimg"):
            value = getattr(self, name)
            _check(value > 0, f"train.{name}", f"must be positive, got {value}")
        _check(self.eval_kimg >= 0, "train.eval_kimg", f"must be 0 (off) or more, got {self.eval_kimg}")
        _check(
            not (self.compile and self.r1_gamma > 0),
            "train.compile",
            "cannot be combined with train.r1_gamma > 0 (R1 needs double backward); turn one off",
        )
        _check(self.threads >= 0, "train.threads", "must be 0 (torch default) or more")


@dataclass(frozen=True)
class SampleParams:
    n: int = 64
    nrow: int = 8
    seed: int = 42
    interpolation_points: int = 4
    interpolation_steps: int = 16

    def validate(self) -> None:
        _check(self.n >= 1, "sample.n", f"must be at least 1, got {self.n}")
        _check(self.nrow >= 1, "sample.nrow", f"must be at least 1, got {self.nrow}")
        _check(
            self.interpolation_points >= 2,
            "sample.interpolation_points",
            f"must be at least 2, got {self.interpolation_points}",
        )
        _check(
            self.interpolation_steps >= 1,
            "sample.interpolation_steps",
            f"must be at least 1, got {self.interpolation_steps}",
        )


@dataclass(frozen=True)
class EvaluateParams:
    n: int = 512
    seed: int = 123
    patches_per_image: int = 128
    projections: int = 512
    inception_weights: str = ""

    def validate(self) -> None:
        _check(self.n >= 1, "evaluate.n", f"must be at least 1, got {self.n}")
        _check(
            self.patches_per_image >= 1,
            "evaluate.patches_per_image",
            f"must be at least 1, got {self.patches_per_image}",
        )
        _check(self.projections >= 1, "evaluate.projections", f"must be at least 1, got {self.projections}")


@dataclass(frozen=True)
class Params:
    download: DownloadParams = field(default_factory=DownloadParams)
    dedup: DedupParams = field(default_factory=DedupParams)
    curate: CurateParams = field(default_factory=CurateParams)
    resize: ResizeParams = field(default_factory=ResizeParams)
    train: TrainParams = field(default_factory=TrainParams)
    sample: SampleParams = field(default_factory=SampleParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)


def parse_color(text: str) -> tuple[int, int, int]:
    """'#rrggbb' or '#rgb' to an RGB tuple; raises ValueError otherwise."""
    s = text.strip().lstrip("#")
    if len(s) == 3:
        s = "".join(c * 2 for c in s)
    if len(s) != 6:
        raise ValueError(text)
    return (int(s[0:2], 16), int(s[2:4], 16), int(s[4:6], 16))


def _fail(name: str, message: str) -> typing.NoReturn:
    raise ParamsError(f"params.yaml: {name}: {message}")


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        _fail(name, message)


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        choices = typing.get_args(annotation)
        if value not in choices:
            _fail(name, f"must be one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            _fail(name, f"must be true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(name, f"must be a whole number, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(name, f"must be a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            _fail(name, f"must be a string, got {value!r}")
        return value
    return value


def _build(cls: type, section: str, raw: Any) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        _fail(section, f"must be a mapping of settings, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        _fail(
            f"{section}.{unknown[0]}",
            f"unknown setting (known: {', '.join(sorted(names))})",
        )
    values = {k: _coerce(f"{section}.{k}", v, hints[k]) for k, v in raw.items()}
    obj = cls(**values)
    if hasattr(obj, "validate"):
        obj.validate()
    return obj


def params_from_dict(data: dict[str, Any]) -> Params:
    """Build and validate Params from a parsed params.yaml mapping."""
    if not isinstance(data, dict):
        raise ParamsError("params.yaml: must be a mapping of stage sections")
    sections = {f.name: f for f in dataclasses.fields(Params)}
    hints = typing.get_type_hints(Params)
    unknown = sorted(set(data) - set(sections))
    if unknown:
        _fail(unknown[0], f"unknown section (known: {', '.join(sections)})")
    built = {name: _build(hints[name], name, data.get(name)) for name in sections}
    train, size = built["train"], built["resize"].size
    if train.resolution > size:
        _fail(
            "train.resolution",
            f"{train.resolution} is above resize.size {size}; lower train.resolution or raise resize.size",
        )
    return Params(**built)


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read params.yaml and return validated, typed Params."""
    import yaml  # here, not at the top: the trainer imports this module on GPU machines without pyyaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run from the project root") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ParamsError(f"{path}{where}: not valid YAML ({exc.__class__.__name__})") from None
    return params_from_dict(data)
