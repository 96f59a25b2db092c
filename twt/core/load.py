"""Loading a run configuration: YAML to a validated ``RunConfig`` (``twt.core.schema``).

    config = load_config("configs/demo.yaml")        # validated; input paths resolved

Errors are ``ConfigError`` (a ``ValueError``) naming the file, the dotted field path and the YAML line, e.g.
``configs/x.yaml: teachers[1].temperature: Input should be greater than or equal to 0 (line 14)``; a
misspelt key gets a suggestion. The YAML is read with bounds (``twt.core.safe_yaml``).

Paths. Model references (``teachers[].model`` except for the ``openai`` backend, ``student.model``,
``dcrs.embedding_model``, ``compression.reference_model``) are Hugging Face ids when they have the form
``name`` or ``org/name``, and local paths otherwise (``./x``, ``../x``, ``a/b/c``, absolute, ``~/x``);
``s3://``/``file://`` URIs are kept as written. Relative local inputs (those models and ``task.questions``,
``task.eval``) resolve against the config file's directory, or against ``base_dir`` when one is given to
``load_config``. ``${NAME}`` in those fields, in ``workdir``, ``registry.uri`` and ``teachers[].base_url``
is replaced by the environment variable NAME (an unset one is an error), except that ``${TWT_DATA}``
defaults to ``data_dir()`` (the package's ``twt/data``), where the tiny demo models live. Outputs
(``workdir``, ``registry.uri``) are not made absolute: a relative one is relative to the current directory.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ValidationError,
)

from twt.core.safe_yaml import YAMLLimitError, load_yaml, read_bounded
from twt.core.schema import ENV_NAME_PATTERN, HF_ID, ConfigError, RunConfig


def data_dir() -> Path:
    """The data directory: ``$TWT_DATA`` when set, else the package's ``twt/data`` (tiny models in tiny/)."""
    env = os.environ.get("TWT_DATA")
    return Path(env).expanduser() if env else Path(__file__).parents[1] / "data"


def default_config_path() -> Path:
    """The demo configuration (embedded task, tiny models): ``configs/demo.yaml`` of the source tree, or a
    copy packaged as ``twt/data/configs/demo.yaml``."""
    here = Path(__file__).resolve().parents[1]
    for candidate in (here.parent / "configs" / "demo.yaml", here / "data" / "configs" / "demo.yaml"):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"no packaged demo config (looked for {here.parent / 'configs' / 'demo.yaml'})")


_ENV_REF = re.compile(r"\$\{([^}]*)\}")


def _expand_env(value: str, loc: tuple) -> str:
    def replace(match: re.Match) -> str:
        name = match.group(1)
        if not re.fullmatch(ENV_NAME_PATTERN, name):
            raise ConfigError(f"{_dotted(loc)}: bad environment reference ${{{name}}}")
        if name in os.environ:
            return os.environ[name]
        if name == "TWT_DATA":
            return str(data_dir())
        raise ConfigError(f"{_dotted(loc)}: environment variable {name} is not set")

    return _ENV_REF.sub(replace, value)


def is_uri(value: str) -> bool:
    """``s3://…``, ``file://…``, ``http(s)://…``: anything with a scheme."""
    return re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", value) is not None


def is_hub_id(value: str) -> bool:
    """Whether a model reference is a Hugging Face id (``name`` or ``org/name``) rather than a local path."""
    return not value.startswith((".", "~", "/")) and HF_ID.fullmatch(value) is not None


def _resolve_path(value: str, base: Path, kind: str) -> str:
    if is_uri(value) or (kind == "model" and is_hub_id(value)):
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def resolve_paths(config: RunConfig, base_dir: str | os.PathLike) -> RunConfig:
    """A copy of ``config`` with ``${NAME}`` expanded and relative local inputs made absolute against
    ``base_dir``."""
    base = Path(base_dir).expanduser().resolve()
    data = config.model_dump()

    def fix(loc: tuple, kind: str) -> None:
        parent = data
        for part in loc[:-1]:
            parent = parent[part]
        value = parent.get(loc[-1])  # a field unused with the chosen options is not dumped
        if value is not None:
            value = _expand_env(value, loc)
            parent[loc[-1]] = _resolve_path(value, base, kind) if kind != "output" else value

    fix(("workdir",), "output")
    fix(("registry", "uri"), "output")
    fix(("task", "questions"), "file")
    fix(("task", "eval"), "file")
    fix(("student", "model"), "model")
    fix(("dcrs", "embedding_model"), "model")
    fix(("compression", "reference_model"), "model")
    fix(("reference", "base_model"), "model")
    for i, teacher in enumerate(config.teachers):
        fix(("teachers", i, "base_url"), "output")
        if teacher.backend != "openai":
            fix(("teachers", i, "model"), "model")
    return RunConfig.model_validate(data)


def load_config(path: str | os.PathLike, base_dir: str | os.PathLike | None = None) -> RunConfig:
    """Read, validate and resolve a run configuration (see the module docstring); raises ``ConfigError``."""
    path = Path(path)
    try:
        text = read_bounded(path)
    except YAMLLimitError as err:
        raise ConfigError(str(err)) from None
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read ({err})") from None
    return parse_config(text, source=str(path), base_dir=base_dir if base_dir is not None else path.parent)


def parse_config(text: str, source: str = "<config>", base_dir: str | os.PathLike = ".") -> RunConfig:
    """Validate and resolve a configuration given as YAML text; ``source`` names it in errors."""
    try:  # bounded: depth, alias expansion and size are capped; duplicate keys refused
        data, root = load_yaml(text, source)
    except YAMLLimitError as err:
        raise ConfigError(str(err)) from None
    if data is None:
        raise ConfigError(f"{source}: empty configuration")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, not {type(data).__name__}")
    try:
        config = RunConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError("\n".join(_describe(e, source, root) for e in err.errors())) from None
    try:
        return resolve_paths(config, base_dir)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _describe(error: dict, source: str, root: yaml.Node | None) -> str:
    loc, message = tuple(error["loc"]), error["msg"]
    if error["type"] == "twt_config":
        loc += tuple(error["ctx"]["field"])
    elif error["type"] == "value_error":
        message = message.removeprefix("Value error, ")
    elif error["type"] == "extra_forbidden":
        message += _suggestion(loc)
    line = _line_of(root, loc)
    return f"{source}: {_dotted(loc)}: {message}" + (f" (line {line})" if line else "")


def _line_of(node: yaml.Node | None, loc: tuple) -> int | None:
    """The YAML line of the deepest node along ``loc`` (a missing field: its parent's line)."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next(((k, v) for k, v in node.value if getattr(k, "value", None) == part), None)
            if match is None:
                break
            line, node = match[0].start_mark.line + 1, match[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def _suggestion(loc: tuple) -> str:
    """``(did you mean 'temperature'?)`` for a misspelt key, from the fields of the model it sits in."""
    model: Any = RunConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = (
            model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        )
        if field is None:
            return ""
        model = _model_in(field.annotation)
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _model_in(annotation: Any) -> Any:
    """The pydantic model inside ``X``, ``X | None`` or ``list[X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None
