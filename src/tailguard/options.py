"""Command-line options generated from the pydantic configs: one source of names, defaults and help text.

Each field of a config model (RetrainParams, BalanceConfig, TrainConfig) becomes one typer option, as
transformers' HfArgumentParser turns argument dataclasses into argparse options:

    field `n_bootstrap: int = 1000` (description "Paired bootstrap ...")
        -> option `--n-bootstrap INTEGER  Paired bootstrap ...  [default: 1000]`

Literal fields get their values as choices, bools a `--name/--no-name` pair, dict fields a repeatable
`--name KEY=JSON` (or one JSON object). A field added to the model appears in the CLI with no second edit.
The options are `inspect.Parameter`s: a command built from them sets them as its `__signature__`, which
is what typer reads. Bounds (ge, lt...) are left to the model: its validation error is the one message.

`--config run.yaml` (retrain): the YAML's keys are the model's fields; a flag given on the command line
wins over the file, the file over the field's default; an unknown key, or a value not of its field's type
(checked strictly: `epochs: true` is not 1, `allow_duplicate_batch: "yes"` is not true), is refused with
one line.
"""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import typer
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.fields import FieldInfo

# Values a field may take on the command line: what click can parse into the field's type directly.
SCALARS = (str, int, float, bool)
# PyYAML reads YAML 1.1, where a float needs a dot: `learning_rate: 1e-4` arrives as the string "1e-4".
_EXPONENT_ONLY = re.compile(r"[-+]?[0-9]+[eE][-+]?[0-9]+")


# The fields the user set (command line, --config keys) for the run this process is starting. The retrain
# flow re-validates its flat parameters without a pydantic validation context (every field arrives there),
# so RetrainParams' recipe step reads them here: `--recipe baseline --epochs 3` then keeps 3 epochs.
EXPLICIT_FIELDS: ContextVar[frozenset[str] | None] = ContextVar("tailguard_explicit_fields", default=None)


@contextmanager
def explicit_fields(names: Iterable[str]) -> Iterator[None]:
    """Within the block, EXPLICIT_FIELDS is `names` (the fields a recipe must not fill); restored after."""
    token = EXPLICIT_FIELDS.set(frozenset(names))
    try:
        yield
    finally:
        EXPLICIT_FIELDS.reset(token)


class OptionsError(ValueError):
    """A command-line option or a --config file that cannot be read; the message is one line."""


def kebab(name: str) -> str:
    """The option name of a field: `n_bootstrap` -> `--n-bootstrap`."""
    return "--" + name.replace("_", "-")


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    """(T, True) for `T | None`, else (annotation, False)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0], True
    return annotation, False


def option_kind(info: FieldInfo) -> str:
    """'scalar' (str/int/float/bool/Literal, optionally None), 'dict' (a JSON object) or 'other'."""
    annotation, _ = _unwrap_optional(info.annotation)
    if typing.get_origin(annotation) is Literal or annotation in SCALARS:
        return "scalar"
    if annotation is dict or typing.get_origin(annotation) is dict:
        return "dict"
    return "other"


def field_default(info: FieldInfo) -> Any:
    """The field's default (its default_factory called), or `...` for a required field."""
    if info.is_required():
        return ...
    return info.get_default(call_default_factory=True)


def _shown(value: Any) -> str:
    """A default as `--help` shows it."""
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def field_option(
    name: str,
    info: FieldInfo,
    *,
    aliases: Iterable[str] = (),
    unset_default: bool = False,
    required_flag: bool = True,
) -> inspect.Parameter:
    """One keyword parameter whose default is a typer.Option built from a pydantic field.

    unset_default: the option's default is None ("not given": the model's own default applies) and
    `--help` shows the model's default; otherwise the option's default is the field's default.
    required_flag False: a required field's flag may be left out (its value can come from --config);
    the model's validation then names it when it is missing everywhere.
    Raises OptionsError for a field the command line cannot express (a list); pass those as KEY=JSON.
    """
    kind = option_kind(info)
    if kind == "other":
        raise OptionsError(f"field {name!r} ({info.annotation}) has no command-line form; use KEY=JSON")
    default = field_default(info)
    help_text = " ".join((info.description or "").split())
    decls = [kebab(name), *aliases]
    if kind == "dict":
        help_text += " As KEY=JSON, repeatable, or one JSON object."
        annotation: Any = list[str]
        shown: str | bool = _shown(default)
        value: Any = None if unset_default else []
    else:
        annotation, optional = _unwrap_optional(info.annotation)
        if typing.get_origin(annotation) is Literal:
            help_text += f" One of: {', '.join(str(a) for a in typing.get_args(annotation))}."
        if annotation is bool:
            decls = [f"{kebab(name)}/--no-{kebab(name)[2:]}", *aliases]
        if optional or unset_default:
            annotation = annotation | None
        shown = _shown(default) if unset_default else True
        value = None if unset_default else default
        if default is ... and not required_flag:
            value, shown, help_text = None, False, help_text + " Required (here or in --config)."
            annotation = annotation | None
    option = typer.Option(value, *decls, help=help_text, show_default=shown)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)


def model_options(
    model: type[BaseModel],
    *,
    skip: Iterable[str] = (),
    aliases: dict[str, tuple[str, ...]] | None = None,
    unset_default: bool = False,
    scalars_only: bool = False,
    required_flags: bool = True,
) -> list[inspect.Parameter]:
    """One option per field of `model` (in declaration order), minus `skip`.

    scalars_only drops the fields that are not str/int/float/bool/Literal (they stay reachable through a
    command's KEY=JSON option); otherwise such a field raises OptionsError. required_flags: see
    field_option's required_flag.
    """
    params = []
    for name, info in model.model_fields.items():
        if name in set(skip) or (scalars_only and option_kind(info) != "scalar"):
            continue
        names = (aliases or {}).get(name, ())
        params.append(
            field_option(name, info, aliases=names, unset_default=unset_default, required_flag=required_flags)
        )
    return params


def parse_pairs(items: Iterable[str], option: str = "--option") -> dict[str, Any]:
    """KEY=JSON pairs into a dict (a bare string when the value is not JSON); one item may be a whole JSON
    object instead. Raises OptionsError naming the option for an item that is neither."""
    values: dict[str, Any] = {}
    for item in items:
        if item.lstrip().startswith("{"):
            try:
                whole = json.loads(item)
            except json.JSONDecodeError as err:
                raise OptionsError(f"{option} {item[:80]!r}: not a JSON object ({err.msg})") from None
            if not isinstance(whole, dict):
                raise OptionsError(f"{option} {item[:80]!r}: expected a JSON object")
            values.update(whole)
            continue
        key, sep, raw = item.partition("=")
        if not sep:
            raise OptionsError(f"{option} {item!r}: expected KEY=VALUE")
        try:
            values[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            values[key.strip()] = raw
    return values


def read_config(path: Path, model: type[BaseModel]) -> dict[str, Any]:
    """The fields a YAML config file sets; keys must be `model`'s field names, values of their types.

    Raises OptionsError (one line) when the file cannot be read, is not a mapping, names a key the
    model lacks (all such keys are named, with the known ones) or holds a value not of its field's type
    (config_value: the file, the key, the expected type and the value).
    """
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text())
    except OSError as err:
        raise OptionsError(f"--config {path}: cannot read ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(getattr(err, "problem", "") or err).split())
        raise OptionsError(f"--config {path}:{where}: not valid YAML ({problem})") from None
    loaded = {} if loaded is None else loaded
    if not isinstance(loaded, dict):
        raise OptionsError(
            f"--config {path}: expected a mapping of option names, got {type(loaded).__name__}"
        )
    unknown = sorted(str(k) for k in loaded if k not in model.model_fields)
    if unknown:
        raise OptionsError(
            f"--config {path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(model.model_fields)})"
        )
    return {key: config_value(path, key, model.model_fields[key], value) for key, value in loaded.items()}


def _type_name(annotation: Any) -> str:
    """`int`, `str`, `dict[str, Any]`, `Literal['auto', 'manual']`: the type as a reader writes it."""
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def config_value(path: Path, key: str, info: FieldInfo, value: Any) -> Any:
    """`value` checked strictly against the field's type: an int field refuses a bool, a bool field "yes",
    a str field 12 or a list; a float field takes an int (and PyYAML's "1e-4", see _EXPONENT_ONLY).

    Bounds (ge, le...) and patterns stay with the model, whose validation names them. Returns the value
    as validated; raises OptionsError naming the file, the key, the expected type and the value.
    """
    annotation, _ = _unwrap_optional(info.annotation)
    if annotation is float and isinstance(value, str) and _EXPONENT_ONLY.fullmatch(value.strip()):
        return float(value)
    try:
        return TypeAdapter(info.annotation).validate_python(value, strict=True)
    except ValidationError:
        shown = " ".join(repr(value).split())
        shown = shown if len(shown) <= 60 else shown[:59] + "…"
        raise OptionsError(
            f"--config {path}: {key}: expected {_type_name(info.annotation)}, got {shown} "
            f"({type(value).__name__})"
        ) from None


def resolve(
    model: type[BaseModel], values: dict[str, Any], given: set[str], from_file: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Every field of `model` from the command line, a --config file and the defaults, in that order.

    values: each field's parsed option value (dict fields as lists of KEY=JSON); given: the fields whose
    flag was on the command line; from_file: the fields a --config file sets (read_config). A field not
    given takes the file's value if it has one, else the option's value (the field's default). Raises
    OptionsError for a bad KEY=JSON item.
    """
    from_file = from_file or {}
    resolved: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        value = values.get(name)
        if option_kind(info) == "dict" and isinstance(value, list | tuple):
            value = parse_pairs(value, kebab(name))
        resolved[name] = from_file[name] if name in from_file and name not in given else value
    return resolved
