"""Reading the configuration: the file, its ``<file>.d/*.toml`` drop-ins, then ``UVRD_<SECTION>_<KEY>``.

The sections themselves, and what each value may be, are config.py's.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from pathlib import Path
from typing import Any
from collections.abc import Mapping

from uvrd.config import SECTIONS, Config, ConfigError

DEFAULT_PATH = Path("/etc/uvrd/uvrd.toml")
ENV_PREFIX = "UVRD_"
# Their values never appear in an error: the line goes to the journal, which more people read than the file.
SECRET_KEYS = frozenset({"kafka.sasl_plain_password", "kafka.ssl_password", "api.tokens", "api.basic_auth",
                         "api.link_secret", "uploader.webhook_secret", "storage.access_key_id",
                         "storage.secret_access_key"})
# Old key names still read, each under its new one: "delivery" is the webhook's word, the Kafka side's is "commit".
# uploader.retention became api.result_retention: the retention every task answer states (expires_at).
RENAMED_KEYS = {"processor.delivery": "processor.commit", "uploader.retention": "api.result_retention"}


def load(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Read *path* (or the default file, which may be absent), then each ``*.toml`` of the directory
    beside it named ``<file>.d`` in name order, each key replacing the one before (the package puts
    the secrets it generates there, so the shipped file stays the operator's); then env overrides."""
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    source = "built-in defaults"
    explicit = path is not None
    path = Path(path) if explicit else DEFAULT_PATH
    if explicit or path.exists():
        raw = _read_toml(path)
        source = str(path)
        drop_ins = sorted(path.with_name(path.name + ".d").glob("*.toml"))
        for drop_in in drop_ins:
            for section, table in _read_toml(drop_in).items():
                if isinstance(table, dict) and isinstance(raw.get(section, {}), dict):
                    raw.setdefault(section, {}).update(table)
                else:
                    raw[section] = table
        source += "".join(f" + {d.name}" for d in drop_ins)
    for section, values in _env_overrides(environ).items():
        raw.setdefault(section, {}).update(values)
    deprecated = _rename_old_keys(raw, source)
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"{source}: unknown section [{unknown[0]}] (known: {', '.join(SECTIONS)})")
    sections = {}
    for name, cls in SECTIONS.items():
        table = raw.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{name}] must be a table")
        sections[name] = _build(name, cls, table)
        sections[name].validate()
    explicit = frozenset(f"{section}.{key}" for section, table in raw.items() for key in table)
    return Config(**sections, source=source, explicit=explicit, deprecated=deprecated)


def _rename_old_keys(raw: dict[str, Any], source: str) -> tuple[str, ...]:
    """Move each old key of *raw* to its new name; a file that gives both is refused, not guessed at."""
    said = []
    for old, new in RENAMED_KEYS.items():
        section, old_key = old.split(".")
        new_section, new_key = new.split(".")
        table = raw.get(section)
        if not isinstance(table, dict) or old_key not in table:
            continue
        where = getattr(table[old_key], "origin", old)
        target = raw.setdefault(new_section, {})
        if not isinstance(target, dict):
            continue  # "[api] must be a table" is said where the sections are built
        if new_key in target:
            raise ConfigError(f"{source}: {where} and {new} are the same setting; keep only {new}")
        target[new_key] = table.pop(old_key)
        said.append(f"{where} is deprecated: call it {new}")
    return tuple(said)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except PermissionError:
        raise ConfigError(f"config file {path} is not readable") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8") from None


def _env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """``UVRD_PROCESSOR_JOB_TIMEOUT=30`` -> ``{"processor": {"job_timeout": "30"}}``.

    Only variables naming a known section count: UVRD_LOG_FORMAT and the like
    belong to other parts of uvrd.
    """
    out: dict[str, dict[str, str]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        section, _, key = name[len(ENV_PREFIX):].lower().partition("_")
        if section in SECTIONS and key:
            out.setdefault(section, {})[key] = _EnvValue(value, name)
    return out


class _EnvValue(str):
    """A string from the environment, to be converted to the field's type."""

    def __new__(cls, value: str, origin: str):
        s = super().__new__(cls, value)
        s.origin = origin
        return s


def _build(section: str, cls: type, table: dict[str, Any]):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in table.items():
        where = getattr(value, "origin", f"{section}.{key}")
        if key not in fields:
            raise ConfigError(f"{where}: unknown key {section}.{key} (known: {', '.join(fields)})")
        kwargs[key] = _convert(hints[key], value, where, secret=f"{section}.{key}" in SECRET_KEYS)
    return cls(**kwargs)


def _convert(hint: Any, value: Any, where: str, secret: bool = False) -> Any:
    from_env = isinstance(value, _EnvValue)
    shown = f"a {type(value).__name__} (value hidden)" if secret else repr(value)
    if hint is bool:
        if from_env:
            lowered = value.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
        elif isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be a boolean, not {shown}")
    if hint is int:
        if from_env:
            try:
                return int(value)
            except ValueError:
                pass
        elif isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be an integer, not {shown}")
    if hint is float:
        if from_env:
            try:
                return float(value)
            except ValueError:
                pass
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where} must be a number, not {shown}")
    if hint is str:
        if isinstance(value, str):
            return str(value)
        raise ConfigError(f"{where} must be a string, not {shown}")
    if hint is Path:
        if isinstance(value, str) and value:
            return Path(value)
        raise ConfigError(f"{where} must be a path, not {shown}")
    if typing.get_origin(hint) is tuple:
        if from_env:
            return tuple(v.strip() for v in value.split(",") if v.strip())
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(f"{where} must be a list of strings, not {shown}")
    raise AssertionError(f"no converter for {hint!r}")  # a field type this module forgot

