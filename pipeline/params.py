"""Typed parameters for every stage, loaded and validated once from params.yaml.

params.yaml is the one place values are set: the dataclasses below declare
names, types and ranges but no defaults, and a test holds their fields equal
to params.yaml's keys. Each stage reads only its own section. Any problem
(missing or unknown key, wrong type, value out of range, duplicate key, a file
that is not UTF-8 YAML) raises ParamsError with one line naming the param.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from pipeline.errors import PipelineError

PARAMS_FILE = Path("params.yaml")
# The project's own params.yaml, beside this package: the defaults for params_from_dict().
DEFAULTS_FILE = Path(__file__).resolve().parents[1] / "params.yaml"
# torch.manual_seed takes 64 bits; the trainer derives seed * 1000 + rank + step from train.seed.
SEED_MAX = 2**32 - 1
MAX_THREADS = 1024  # train.threads: torch.set_num_threads(100000) segfaults

T = TypeVar("T")


class ParamsError(PipelineError):
    """A value in params.yaml is missing, unknown, mistyped or out of range."""


# Search engines (the rest of download.source: synthetic, urls, folder).
ENGINES = ("google", "bing", "ddg", "openverse")
SOURCES = ("synthetic", *ENGINES, "urls", "folder")
# Sources that can share one run; synthetic and folder stand alone.
COMBINABLE = (*ENGINES, "urls")
# Licence codes download.licenses may name: Openverse's, the only engine that reports licences.
LICENCES = (
    "by",
    "by-sa",
    "by-nc",
    "by-nd",
    "by-nc-sa",
    "by-nc-nd",
    "cc0",
    "pdm",
    "sampling+",
    "nc-sampling+",
)


@dataclass(frozen=True)
class DownloadParams:
    source: str | list[str]
    count: int
    seed: int
    queries: list[str]
    limit: int
    urls_file: str
    folder: str
    chromedriver: str
    chrome: str
    search_url: str | dict[str, str]
    market: str
    licenses: list[str]
    user_agent: str
    workers: int
    per_host: int
    timeout: float
    retries: int
    max_bytes: int
    min_side: int
    ca_bundle: str

    @property
    def sources(self) -> list[str]:
        """download.source as a list: `bing` and `[bing]` are the same."""
        return list(self.source) if isinstance(self.source, list) else [self.source]

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
        unknown = [x for x in lic if x.lower() not in LICENCES]
        _check(
            not unknown,
            "download.licenses",
            f"unknown licence code {unknown[0] if unknown else ''!r}; use {', '.join(LICENCES)}",
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
                    not url or (url.startswith(("http://", "https://")) and "{" not in url),
                    name,
                    f"must be the http(s) URL of the engine's endpoint (the query is added to it; "
                    f"no {{query}} or {{offset}}), or empty for its own, got {url!r}",
                )


@dataclass(frozen=True)
class DedupParams:
    hash: Literal["phash", "dhash", "whash", "ahash"]
    hash_size: int
    threshold: int
    min_score: float
    max_colour_diff: float
    keep: Literal["largest", "earliest"]
    workers: int
    draft: bool

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
    include_pending: bool


@dataclass(frozen=True)
class ResizeParams:
    size: int
    mode: Literal["crop", "pad", "fit"]
    filter: Literal["lanczos", "bicubic", "bilinear", "hamming", "box", "nearest"]
    reducing_gap: float
    background: str
    workers: int

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
    resolution: int
    channels: int
    d_channels: int
    max_channels: int
    latent_dim: int
    upsample: Literal["deconv", "nearest"]
    spectral_norm: bool
    loss: Literal["bce", "hinge"]
    r1_gamma: float
    diffaugment: str
    shift: float
    ema_kimg: float
    batch_size: int
    lr: float
    g_lr_ratio: float
    beta1: float
    beta2: float
    kimg: float
    log_kimg: float
    sample_kimg: float
    checkpoint_kimg: float
    eval_kimg: float
    resume: bool
    precision: Literal["auto", "fp32", "bf16"]
    compile: bool
    seed: int
    device: Literal["auto", "cpu", "cuda", "mps"]
    threads: int

    @property
    def d_width(self) -> int:
        """D's base width: `d_channels`, or G's `channels` when it is 0."""
        return self.d_channels or self.channels

    def validate(self) -> None:
        r = self.resolution
        _check(
            32 <= r <= 512 and r & (r - 1) == 0,
            "train.resolution",
            f"must be a power of two from 32 to 512, got {r}",
        )
        _check(1 <= self.channels <= 1024, "train.channels", f"must be 1..1024, got {self.channels}")
        _check(
            0 <= self.d_channels <= 1024,
            "train.d_channels",
            f"must be 0 (as train.channels) or 1..1024, got {self.d_channels}",
        )
        _check(
            self.max_channels >= max(self.channels, self.d_channels),
            "train.max_channels",
            f"must be at least train.channels and train.d_channels "
            f"({max(self.channels, self.d_channels)}), got {self.max_channels}",
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
        _check(
            0 < self.shift <= 0.5,
            "train.shift",
            f"must be above 0 and at most 0.5 (a fraction of the image size; 0.125 = DiffAugment's), got {self.shift}",
        )
        # translation rounds shift x size to whole pixels: below half a pixel it would silently do nothing
        _check(
            self.shift >= 1 / (2 * r) or "translation" not in augs,
            "train.shift",
            f"{self.shift} moves images by 0 px at train.resolution {r}; use at least {1 / (2 * r)}",
        )
        _check(self.ema_kimg >= 0, "train.ema_kimg", f"must be 0 (no EMA) or more, got {self.ema_kimg}")
        # BatchNorm in training mode needs at least two images per batch.
        _check(self.batch_size >= 2, "train.batch_size", f"must be at least 2, got {self.batch_size}")
        _check(0 < self.lr < 1, "train.lr", f"must be between 0 and 1, got {self.lr}")
        _check(
            0 < self.g_lr_ratio <= 100,
            "train.g_lr_ratio",
            f"must be above 0 and at most 100 (G's learning rate is train.lr x this), got {self.g_lr_ratio}",
        )
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
        # torch.set_num_threads(100000) segfaults. Above this machine's CPUs is allowed (params.yaml may
        # be written for a bigger box): train clamps it to the CPU count with a warning.
        _check(
            0 <= self.threads <= MAX_THREADS,
            "train.threads",
            f"must be 0 (torch's default) or 1..{MAX_THREADS}, got {self.threads}",
        )


@dataclass(frozen=True)
class SampleParams:
    n: int
    nrow: int
    seed: int
    interpolation_points: int
    interpolation_steps: int

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
    n: int
    seed: int
    patches_per_image: int
    projections: int
    inception_weights: str

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
    download: DownloadParams
    dedup: DedupParams
    curate: CurateParams
    resize: ResizeParams
    train: TrainParams
    sample: SampleParams
    evaluate: EvaluateParams


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


def _key(key: Any) -> str:
    """A key as the error line shows it: bare when it is a plain name, else quoted (never a line break)."""
    return key if isinstance(key, str) and key.isidentifier() else repr(key)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        _fail(name, message)


_FORMS = {str: "a string", list: "a list", dict: "a mapping", int: "a whole number", float: "a number"}


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        choices = typing.get_args(annotation)
        if isinstance(value, bool) or value not in choices:
            _fail(name, f"must be one of {', '.join(map(str, choices))}, got {_show(value)}")
        return value
    if origin is types.UnionType:
        forms = tuple(typing.get_origin(a) or a for a in typing.get_args(annotation))
        if isinstance(value, bool) or not isinstance(value, forms):
            _fail(name, f"must be {' or '.join(_FORMS[f] for f in forms)}, got {_show(value)}")
        return value  # the section's validate() says what the items must be
    if origin is list:
        return value  # the section's validate() says what the items must be
    if annotation is bool:
        if not isinstance(value, bool):
            _fail(name, f"must be true or false, got {_show(value)}")
        return value
    if annotation is int:
        # 2e3 is a whole number written as a float; 2.5 is not.
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(name, f"must be a whole number, got {_show(value)}")
        if name.endswith(".seed") and not 0 <= value <= SEED_MAX:
            _fail(name, f"must be 0..{SEED_MAX}, got {value}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(name, f"must be a number, got {_show(value)}")
        if not math.isfinite(value):
            _fail(name, f"must be a finite number, got {_show(value)}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            _fail(name, f"must be a string, got {_show(value)}")
        return value
    raise TypeError(f"{name}: no rule for type {annotation!r}")  # a new field type needs a rule here


def _build(cls: type, section: str, raw: Any) -> Any:
    if raw is None:
        raw = {}  # `curate:` with its only line deleted: say which setting is missing
    if not isinstance(raw, dict):
        _fail(section, f"must be a mapping of settings, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted((k for k in raw if k not in names), key=str)
    if unknown:
        _fail(f"{section}.{_key(unknown[0])}", f"unknown setting (known: {', '.join(sorted(names))})")
    missing = [k for k in names if k not in raw]
    if missing:
        _fail(
            f"{section}.{missing[0]}",
            f"missing; add `{missing[0]}: <value>` under `{section}:` (every setting is set in params.yaml)",
        )
    values = {k: _coerce(f"{section}.{k}", raw[k], hints[k]) for k in names}
    obj = cls(**values)
    if hasattr(obj, "validate"):
        obj.validate()
    return obj


def _sections() -> dict[str, type]:
    return typing.get_type_hints(Params)


def parse_params(data: Any) -> Params:
    """Build and validate Params from a whole params.yaml mapping: every section and key is required."""
    if not isinstance(data, dict):
        raise ParamsError("params.yaml: must be a mapping of stage sections")
    sections = _sections()
    unknown = sorted((k for k in data if k not in sections), key=str)
    if unknown:
        _fail(_key(unknown[0]), f"unknown section (known: {', '.join(sections)})")
    for name in sections:
        if name not in data:
            _fail(name, "missing section; copy it from the project's params.yaml")
    built = {name: _build(cls, name, data[name]) for name, cls in sections.items()}
    train, size = built["train"], built["resize"].size
    if train.resolution > size:
        _fail(
            "train.resolution",
            f"{train.resolution} is above resize.size {size}; lower train.resolution or raise resize.size",
        )
    return Params(**built)


@functools.cache
def _defaults() -> dict[str, Any]:
    return _parse_yaml(DEFAULTS_FILE.read_bytes(), str(DEFAULTS_FILE))


def defaults() -> dict[str, Any]:
    """The project's params.yaml as a mapping (a fresh copy): the one place defaults are set."""
    return copy.deepcopy(_defaults())


def params_from_dict(overrides: dict[str, Any]) -> Params:
    """The project's params.yaml with `overrides` ({section: {key: value}}) on top, validated.

    For tests, benchmarks and scripts; stages get theirs from load_params().
    """
    if not isinstance(overrides, dict):
        raise ParamsError("params.yaml: must be a mapping of stage sections")
    data = defaults()
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section].update(values)
        else:
            data[section] = values
    return parse_params(data)


def from_defaults(cls: type[T], **overrides: Any) -> T:
    """One section (e.g. DownloadParams) as the project's params.yaml sets it, with `overrides`, validated."""
    name = next(n for n, c in _sections().items() if c is cls)
    return _build(cls, name, defaults()[name] | overrides)


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(key)
        self.key, self.line, self.first = key, line, first


def _loader() -> type:
    import yaml  # here, not at the top: the trainer imports this module on GPU machines without pyyaml

    class Loader(yaml.SafeLoader):
        """SafeLoader with YAML 1.2 floats (2e-4 is a number) that refuses duplicate keys, as DVC does."""

        def construct_mapping(self, node: Any, deep: bool = False) -> dict:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark.line + 1)
                except TypeError:
                    continue  # an unhashable key: SafeLoader itself says so
                if first != key_node.start_mark.line + 1:
                    raise _DuplicateKey(key, key_node.start_mark.line + 1, first)
            return super().construct_mapping(node, deep=deep)

    # PyYAML follows YAML 1.1, where a float needs a dot: `2e-4` would be the string "2e-4".
    Loader.yaml_implicit_resolvers = {
        ch: [r for r in rs if r[0] != "tag:yaml.org,2002:float"]
        for ch, rs in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))
    return Loader


_FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


def _parse_yaml(raw: bytes, source: str) -> Any:
    import yaml

    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ParamsError(
            f"{source}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); save the file as UTF-8"
        ) from None
    try:
        return yaml.load(text, Loader=_loader())
    except _DuplicateKey as dup:
        raise ParamsError(
            f"{source}:{dup.line}: duplicate key {dup.key!r} (first on line {dup.first}); keep one"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or exc.__class__.__name__
        raise ParamsError(f"{source}{where}: not valid YAML ({problem})") from None
    except RecursionError:
        raise ParamsError(f"{source}: nested too deeply to be params") from None


def params_from_yaml(raw: bytes, source: str = "params.yaml") -> Params:
    """Parse and validate the bytes of a params.yaml; errors in the file itself name `source`."""
    data = _parse_yaml(raw, source)
    if data is None:
        raise ParamsError(f"{source}: empty; copy the project's params.yaml")
    return parse_params(data)


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read params.yaml and return validated, typed Params."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run from the project root") from None
    except OSError as exc:
        raise ParamsError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return params_from_yaml(raw, str(path))
