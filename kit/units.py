"""Sizes, page levels and size parsing; how a modelled rate and its band are written
(:func:`rate_text`, :func:`band_fields`: one way for every surface); the packages' names loaded
on first use (:func:`deferred_attributes`).

Page levels are the byte sizes of the x86-64 mappings (``PAGE_4K``, ``PAGE_2M``, ``PAGE_1G``);
the kernel names them ``PG_LEVEL_4K/2M/1G`` (arch/x86/include/asm/pgtable_types.h).
"""
from __future__ import annotations

import importlib
import numbers
import re
from dataclasses import dataclass, replace

import numpy as np

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
TiB = 1 << 40
PiB = 1 << 50

PAGE_4K = 4 * KiB
PAGE_2M = 2 * MiB
PAGE_1G = 1 * GiB

#: 4K pages per 2M region, 2M regions per 1G region (PTRS_PER_PTE / PTRS_PER_PMD).
PTRS_PER_TABLE = 512
#: log2 of the 4K page size (arch/x86/include/asm/page_types.h ``PAGE_SHIFT``).
PAGE_SHIFT = 12
PMD_SHIFT = 21
PUD_SHIFT = 30
#: order of a 2M folio (include/linux/pgtable.h ``PMD_ORDER``).
PMD_ORDER = PMD_SHIFT - PAGE_SHIFT
#: 4K pages in a 2M region and in a 1G region.
PAGES_PER_2M = PAGE_2M >> PAGE_SHIFT
PAGES_PER_1G = PAGE_1G >> PAGE_SHIFT
#: page levels by level code (0 = 4K, 1 = 2M, 2 = 1G: the direct map's ``LVL_*``).
LEVELS = (PAGE_4K, PAGE_2M, PAGE_1G)
LEVEL_NAMES = {PAGE_4K: "4K", PAGE_2M: "2M", PAGE_1G: "1G"}

_UNITS = {
    "": 1, "b": 1,
    "k": KiB, "kb": KiB, "kib": KiB,
    "m": MiB, "mb": MiB, "mib": MiB,
    "g": GiB, "gb": GiB, "gib": GiB,
    "t": TiB, "tb": TiB, "tib": TiB,
    "p": PiB, "pb": PiB, "pib": PiB,
}
#: How sizes and rates read, for help texts and outputs: sizes are binary (``160G`` is 160 GiB,
#: as the kernel's ``memparse`` reads it: lib/cmdline.c), rates are decimal (GB/s, as the
#: measurements of data/measurements.csv and docs/data.md are).
SIZE_UNITS = ("sizes are binary: K, M, G, T (with or without B or iB) are KiB, MiB, GiB, TiB, "
              "so 160G = 160GiB = 171.8 GB; rates are decimal GB/s (1e9 bytes per second)")
# ASCII only: ``\d`` and ``int()`` would also take other scripts' digits ('٣', fullwidth '３')
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z]*)\s*$", re.ASCII)
#: the longest size text parsed (a size past every bound has fewer characters)
MAX_SIZE_TEXT = 64


def parse_size(text: str | int, *, name: str = "size") -> int:
    """Parse ``"1.5TiB"``, ``"160GiB"``, ``"2M"``, ``"4096"`` or an int into bytes.

    Units are binary (``K``/``KB``/``KiB`` are all 1024, as in the kernel's ``memparse``,
    lib/cmdline.c): ``160G`` and ``160GB`` are 160 GiB, not 160e9 bytes. Every surface that
    takes a size says so (:data:`SIZE_UNITS`) and writes sizes back with ``iB``
    (:func:`format_size`); rates stay decimal GB/s.
    The result must be a whole number of bytes and not negative; anything else raises a
    ``ValueError`` naming ``name``. Text is ASCII only (digits of other scripts, which
    ``int()`` would read, are refused) and at most :data:`MAX_SIZE_TEXT` characters; an int
    (or a numpy integer) is taken as bytes, a bool or any other type is a ``TypeError``.
    """
    if isinstance(text, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a size such as '160GiB' or an int, got {text!r}")
    if isinstance(text, (int, np.integer)):
        if text < 0:
            raise ValueError(f"{name}: a size cannot be negative, got {text}")
        return int(text)
    if not isinstance(text, str):
        raise TypeError(f"{name}: expected a size such as '160GiB' or an int, got {type(text).__name__} {text!r}")
    if len(text) > MAX_SIZE_TEXT:
        raise ValueError(f"{name}: cannot parse a size of {len(text)} characters (at most {MAX_SIZE_TEXT})")
    if not text.isascii():
        raise ValueError(f"{name}: cannot parse {text!r} as a size: only ASCII digits 0-9 and the "
                         "units B, K/KiB, M/MiB, G/GiB, T/TiB, P/PiB")
    m = _SIZE_RE.match(text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(
            f"{name}: cannot parse {text!r} as a size; use a number with an optional unit "
            "B, K/KiB, M/MiB, G/GiB, T/TiB or P/PiB (e.g. '1.5TiB')")
    number, unit = m.group(1), _UNITS[m.group(2).lower()]
    if "." in number:
        whole, frac = number.split(".")
        # exact decimal arithmetic: 1.5TiB must be exactly 3 * 512 GiB
        scaled = int(whole or "0") * unit + (int(frac or "0") * unit) // (10 ** len(frac or "0"))
        if (int(frac or "0") * unit) % (10 ** len(frac or "0")):
            raise ValueError(f"{name}: {text!r} is not a whole number of bytes")
        return scaled
    return int(number) * unit


def format_size(nbytes: int) -> str:
    """Render bytes with the largest binary unit that divides them exactly ("1536GiB"), else
    with two decimals in the largest unit not above them."""
    units = ((TiB, "TiB"), (GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB"))
    for unit, suffix in units:
        if nbytes >= unit and nbytes % unit == 0:
            return f"{nbytes // unit}{suffix}"
    for unit, suffix in units:
        if nbytes >= unit:
            return f"{nbytes / unit:.2f}{suffix}"
    return f"{nbytes}B"


#: What a modelled rate's band is, said once wherever a band is shown: the lowest and highest
#: rate over the fitted parameters moved one standard deviation of the fit's covariance along
#: each principal axis (``kit.sim.params.BAND_SIGMAS``), each side widened in quadrature by one
#: standard deviation of the model error the fit recorded from its leave-one-out
#: (``CostParams.model_error``; 0 for a set that records none; docs/sim-model.md, "Error bars
#: and validation"). The assumed parameters are held as they are.
BAND_MEANING = "fit and model error, 1 sd"
#: What stands where a rate has no band: a parameter set without the fit's covariance (a file a
#: user wrote, or one whose covariance is not of its fitted parameters) gives none, and no
#: band is made up for it.
NO_BAND = "no band: the cost parameters carry no fit covariance"
#: :data:`NO_BAND` in a table's band cell (the table's caption or heading says why)
NO_BAND_CELL = "no band"
#: The suffixes of a rate column's band columns in tables and CSV: a field name gets
#: ``_low``/``_high`` (``model_gbps`` -> ``model_gbps_low``), a heading a person reads (it has a
#: space) `` band low``/`` band high`` (``presplit-4k: fault-in GB/s band low``).
BAND_SUFFIXES = ("_low", "_high")
BAND_HEADING_SUFFIXES = (" band low", " band high")


def has_band(band) -> bool:
    """Whether ``band`` is a band: two finite numbers ``[low, high]``."""
    if band is None or isinstance(band, (str, bytes)) or len(band) != 2:
        return False
    return all(isinstance(v, numbers.Real) and not isinstance(v, bool) and v == v and abs(v) != float("inf")
               for v in band)


def band_text(band, digits: int = 2) -> str:
    """A band as ``low - high`` (``digits`` decimals), or :data:`NO_BAND`."""
    if not has_band(band):
        return NO_BAND
    return f"{band[0]:.{digits}f} - {band[1]:.{digits}f}"


def rate_text(gbps: float, band, digits: int = 2) -> str:
    """A modelled rate with its band, the one way every surface writes it:
    ``15.26 GB/s (band 14.19 - 16.42)``, or ``15.26 GB/s (no band: ...)``. What a band is
    (:data:`BAND_MEANING`) is said once per page, table or figure, not after every number."""
    if not has_band(band):
        return f"{gbps:.{digits}f} GB/s ({NO_BAND})"
    return f"{gbps:.{digits}f} GB/s (band {band_text(band, digits)})"


def band_keys(key: str) -> tuple[str, str]:
    """The names of a rate column's two band columns (:data:`BAND_SUFFIXES`)."""
    suffixes = BAND_HEADING_SUFFIXES if " " in key else BAND_SUFFIXES
    return key + suffixes[0], key + suffixes[1]


def band_fields(key: str, band, digits: int | None = 3) -> dict:
    """A rate column's band columns (:func:`band_keys`) with the band's low and high, rounded
    to ``digits`` decimals (None: as they are); both None when ``band`` is none."""
    lo, hi = (float(band[0]), float(band[1])) if has_band(band) else (None, None)
    if lo is not None and digits is not None:
        lo, hi = round(lo, digits), round(hi, digits)
    k_lo, k_hi = band_keys(key)
    return {k_lo: lo, k_hi: hi}


#: an integer as the command line and notebook parameters take it: ASCII digits only (``int()``
#: would also read other scripts' digits, '١٢', and underscores), at most 40 characters
_INT_RE = re.compile(r"^\s*[+-]?[0-9]{1,40}\s*$", re.ASCII)


def parse_int(text, *, name: str = "value") -> int:
    """An integer from text: an optional sign and at most 40 ASCII digits 0-9 (no other
    scripts' digits, no underscores, no exponent). Anything else raises a ``ValueError``
    naming ``name``. The one integer reader of every surface (CLI options, ``-p`` values)."""
    if not isinstance(text, str) or not _INT_RE.match(text):
        shown = text if not isinstance(text, str) or len(text) <= MAX_SIZE_TEXT else text[:MAX_SIZE_TEXT] + "..."
        raise ValueError(f"{name}: expected an integer written in ASCII digits 0-9, got {shown!r}")
    return int(text)


def check_int(value, name: str, min: int | None = None, max: int | None = None) -> int:
    """``value`` as a plain int. A bool, a float, a string or any non-integer (numpy integers
    are integers) raises ``TypeError`` naming ``name``; a value outside ``min..max``
    (inclusive, None: open) raises ``ValueError`` naming it and the allowed range."""
    if type(value) is int and (min is None or value >= min) and (max is None or value <= max):
        return value                    # the common case, without the checks below
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    value = int(value)
    if (min is not None and value < min) or (max is not None and value > max):
        lo = "" if min is None else f"{min}"
        hi = "" if max is None else f"{max}"
        want = f"{lo}..{hi}" if min is not None and max is not None else (f">= {lo}" if max is None else f"<= {hi}")
        raise ValueError(f"{name}: expected an int {want}, got {value}")
    return value


def check_bool(value, name: str) -> bool:
    """``value`` as a bool: only ``True``/``False`` (or a numpy bool). Anything else, 0 and 1
    and ``"no"`` included, raises ``TypeError`` naming ``name``: a truthy string must not
    turn an option on."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {type(value).__name__} {value!r}")
    return bool(value)


def check_level(level, *, name: str = "level", allowed=(PAGE_4K, PAGE_2M)) -> int:
    """Validate a page level; raise ``ValueError`` naming ``name`` and the allowed values."""
    if isinstance(level, bool) or not isinstance(level, int) or level not in allowed:
        names = ", ".join(f"PAGE_{LEVEL_NAMES[a]} ({a})" for a in allowed)
        raise ValueError(f"{name}: must be one of {names}, got {level!r}")
    return level


# ============================================================ parameters and their bounds
#: The most vCPUs one KVM VM can have on x86: ``KVM_MAX_VCPUS`` is ``CONFIG_KVM_MAX_NR_VCPUS``
#: (arch/x86/include/asm/kvm_host.h), whose Kconfig range ends at 4096, the default with
#: ``MAXSMP`` (arch/x86/kvm/Kconfig ``KVM_MAX_NR_VCPUS``). Kept here, at the bottom layer, so
#: that the KVM model and the scenario table spell it once.
KVM_MAX_VCPUS = 4096

PARAM_KINDS = ("size", "int", "float", "choice", "bool", "text", "list")


class ParamTypeError(ValueError, TypeError):
    """A parameter given a value of the wrong type. Both a ``ValueError`` (every surface reports
    a bad parameter as one) and a ``TypeError`` (what Python code expects for a wrong type)."""


def _plain(v) -> str:
    return format_size(v) if isinstance(v, int) and not isinstance(v, bool) else str(v)


@dataclass(frozen=True)
class Param:
    """One parameter and its bounds: the single place where its values are checked.

    ``kind`` is one of :data:`PARAM_KINDS`:

    - ``size``: bytes, given as an int or as text such as ``"160GiB"`` (:func:`parse_size`); a
      whole number of ``multiple`` bytes; ``min``/``max`` in bytes;
    - ``int`` / ``float``: a number within ``min``..``max`` (inclusive; None: unbounded);
      ``float`` with ``unit="fraction"`` reads "a fraction 0..1";
    - ``choice``: one of ``choices``, or an instance or subclass of a type in ``objects`` (a
      direct-map policy a user wrote in a notebook cell);
    - ``bool``, ``text``;
    - ``list``: a list of ``item`` values, at least ``min`` (default 1) and at most ``max``
      long; a lone choice is read as a list of one; ``unique`` drops repeats (first kept).

    ``why`` says where the upper bound comes from; an error past it names it. ``help`` is the
    one-line description surfaces show (CLI help, widget tooltips, docs).
    """

    name: str
    kind: str
    min: float | None = None
    max: float | None = None
    unit: str = ""
    default: object = None
    help: str = ""
    why: str = ""
    choices: tuple = ()
    objects: tuple = ()
    multiple: int = 1
    item: "Param | None" = None
    unique: bool = False

    def __post_init__(self):
        if self.kind not in PARAM_KINDS:
            raise ValueError(f"kind: unknown {self.kind!r}; allowed: {', '.join(PARAM_KINDS)}")
        if self.kind == "list" and self.item is None:
            raise ValueError(f"{self.name}: a list parameter needs an item parameter")

    # ------------------------------------------------------------------ derived parameters
    def derive(self, **changes) -> "Param":
        """The same parameter with some fields changed (a new name, a tighter bound)."""
        return replace(self, **changes)

    def in_units(self, unit: int, name: str, unit_name: str) -> "Param":
        """A size parameter as an integer count of ``unit`` bytes (e.g. GiB for a widget):
        the bounds rounded inwards."""
        lo = -(-int(self.min or 0) // unit) or 1
        hi = None if self.max is None else int(self.max) // unit
        default = None if self.default is None else parse_size(self.default, name=name) // unit
        return Param(name, "int", lo, hi, unit=unit_name, default=default, help=self.help, why=self.why)

    def list_of(self, name: str, *, min: int = 1, help: str = "") -> "Param":
        """A list of values of this parameter (choices: repeats dropped)."""
        return Param(name, "list", min, None, item=self, unique=self.kind == "choice", help=help or self.help)

    # ------------------------------------------------------------------ text for surfaces
    def bounds_text(self) -> str:
        """The allowed values in a few words ("1..4096", "4MiB..64TiB, whole 2MiB regions")."""
        k = self.kind
        if k == "choice":
            return "one of: " + ", ".join(map(str, self.choices)) + (
                f" (or a {self.objects[0].__name__})" if self.objects else "")
        if k == "bool":
            return "True or False"
        if k == "text":
            return "text"
        if k == "list":
            return f"a list of {self.item.bounds_text()}"
        fmt = _plain if k == "size" else str
        if self.max is None:
            text = f">= {fmt(self.min)}" if self.min is not None else "any"
        else:
            text = f"{fmt(self.min)}..{fmt(self.max)}"
        if k == "size" and self.multiple > 1:
            text += f", whole {format_size(self.multiple)} regions"
        return text

    def describe(self) -> str:
        """``help`` with the allowed values and the default, for CLI help and docs."""
        parts = [self.help] if self.help else []
        unit = f" {self.unit}" if self.unit and self.kind in ("int", "float") and self.unit != "fraction" else ""
        parts.append(f"{self.bounds_text()}{unit}")
        if self.default is not None:
            parts.append(f"default {self.default}")
        return "; ".join(parts)

    # ------------------------------------------------------------------ checking
    def accepts_object(self, value) -> bool:
        return bool(self.objects) and (isinstance(value, self.objects) or (
            isinstance(value, type) and issubclass(value, self.objects)))

    def check(self, value, name: str | None = None):
        """The normalised value (sizes in bytes, ints as int, floats as float, lists as lists)
        or a ``ValueError`` naming the parameter (``name``, default :attr:`name`) and what is
        allowed; a value of the wrong type raises :class:`ParamTypeError`."""
        name = name or self.name
        return getattr(self, f"_check_{self.kind}")(value, name)

    def _past(self, v) -> str:
        if self.max is not None and v > self.max and self.why:
            return f" (the limit: {self.why})"
        return ""

    def _check_size(self, value, name):
        try:
            n = parse_size(value, name=name)
        except TypeError as e:
            raise ParamTypeError(str(e)) from None
        if self.multiple > 1 and n % self.multiple:
            raise ValueError(f"{name}: must be a whole number of {format_size(self.multiple)} regions, "
                             f"got {format_size(n)}")
        if self.min is not None and n < self.min:
            raise ValueError(f"{name}: must be at least {format_size(self.min)}, got {format_size(n)}")
        if self.max is not None and n > self.max:
            raise ValueError(f"{name}: at most {format_size(self.max)}, got {format_size(n)}{self._past(n)}")
        return n

    def _range(self) -> str:
        if self.max is None:
            return f">= {self.min}" if self.min is not None else ""
        return f"{self.min}..{self.max}"

    def _check_int(self, value, name):
        if type(value) is int and (self.min is None or value >= self.min) and (self.max is None or value <= self.max):
            return value                # the common case, without the checks below
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ParamTypeError(f"{name}: expected an integer {self._range()}, got {value!r}")
        v = int(value)
        if (self.min is not None and v < self.min) or (self.max is not None and v > self.max):
            raise ValueError(f"{name}: expected an integer {self._range()}, got {v}{self._past(v)}")
        return v

    def _check_float(self, value, name):
        what = "a fraction" if self.unit == "fraction" else "a number"
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ParamTypeError(f"{name}: expected {what} {self._range()}, got {value!r}")
        v = float(value)
        if not ((self.min is None or v >= self.min) and (self.max is None or v <= self.max)):
            raise ValueError(f"{name}: expected {what} {self._range()}, got {value!r}{self._past(v)}")
        return v

    def _allowed(self) -> str:
        text = ", ".join(map(str, self.choices))
        return text + (f" (or a {self.objects[0].__name__})" if self.objects else "")

    def _is_choice(self, value) -> bool:
        if self.accepts_object(value):
            return True
        try:
            return value in self.choices
        except TypeError:
            return False

    def _check_choice(self, value, name):
        if not self._is_choice(value):
            raise ValueError(f"{name}: unknown {value!r}; allowed: {self._allowed()}")
        return value

    def _check_bool(self, value, name):
        if not isinstance(value, bool):
            raise ParamTypeError(f"{name}: expected True or False, got {value!r}")
        return value

    def _check_text(self, value, name):
        if not isinstance(value, str):
            raise ParamTypeError(f"{name}: expected a string, got {value!r}")
        return value

    def _check_list(self, value, name):
        item = self.item
        if item.kind == "choice" and (isinstance(value, str) or item.accepts_object(value)):
            value = [value]
        lo = 1 if self.min is None else int(self.min)
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or len(value) < lo:
            kinds = {"int": "integers ", "float": "numbers ", "size": "sizes "}.get(item.kind, "")
            what = f"from: {item._allowed()};" if item.kind == "choice" else f"of {kinds}{item.bounds_text()},"
            many = "non-empty list" if lo == 1 else (f"list of at least {lo}" if lo else "list")
            error = ValueError if isinstance(value, (list, tuple)) else ParamTypeError
            raise error(f"{name}: expected a {many} {what} got {value!r}")
        if self.max is not None and len(value) > self.max:
            raise ValueError(f"{name}: at most {int(self.max)} items, got {len(value)}{self._past(len(value))}")
        if item.kind == "choice":
            bad = [x for x in value if not item._is_choice(x)]
            if bad:
                raise ValueError(f"{name}: unknown {', '.join(map(repr, bad))}; allowed: {item._allowed()}")
            out = list(value)
        else:
            out = [item.check(x, f"{name}[{i}]") for i, x in enumerate(value)]
        return list(dict.fromkeys(out)) if self.unique else out


def deferred_attributes(namespace: dict, names: dict, *, renamed: dict | None = None, submodules=True):
    """A package's module ``__getattr__`` and ``__dir__`` (PEP 562) that load its public names
    on first use (docs/architecture.md, "Deferred loading"). ``namespace``: the package's
    ``globals()``; ``names``: each public name and the submodule it comes from; ``renamed``: an
    old name and the (submodule, name) it now is; ``submodules``: which other names are
    submodules imported on first access: every public name (True), or only these names. A
    name loaded is bound in ``namespace``, so it is looked up once; any other name raises the
    ``AttributeError`` a module does."""
    package = namespace["__name__"]
    renamed = renamed or {}

    def __getattr__(name: str):
        if name in names or name in renamed:
            module, attr = renamed.get(name, (names.get(name), name))
            value = getattr(importlib.import_module(f".{module}", package), attr)
            namespace[name] = value
            return value
        if (not name.startswith("_")) if submodules is True else name in submodules:
            try:                                  # a submodule, as when all were imported at once
                return importlib.import_module(f".{name}", package)
            except ModuleNotFoundError as e:
                if e.name != f"{package}.{name}":
                    raise
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(namespace) | set(names) | set(renamed))

    return __getattr__, __dir__
