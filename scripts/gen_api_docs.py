"""Generate ``docs/api.md``, the API reference, from the docstrings of the public classes.

Covers the hook, the operators, the sensor, the trigger and the notifier: per class its docstring,
its constructor's signature and parameters (``:param name:`` fields, gathered along the class's
bases in this package so inherited arguments are documented too), and its public methods.

Run ``.venv/bin/python scripts/gen_api_docs.py`` after changing a docstring or a signature;
``tests/test_api_docs.py`` fails while the committed file differs from what this writes
(``--check`` does the same from the command line).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
import textwrap
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "api.md"
PACKAGE = "airflow_provider_openbanking"

#: (section title, module, class names or None for every public class defined in the module)
SECTIONS: list[tuple[str, str, list[str] | None]] = [
    ("Hook", f"{PACKAGE}.hooks.openbanking", ["OpenBankingHook"]),
    ("Operators", f"{PACKAGE}.operators.openbanking", None),
    ("Sensor", f"{PACKAGE}.sensors.openbanking", None),
    ("Trigger", f"{PACKAGE}.triggers.openbanking", None),
    ("Notifier", f"{PACKAGE}.notifications.log", None),
]

_FIELD = re.compile(r"^:(param|type|raises|return|returns|rtype)\s*([^:]*):\s*(.*)$")


def _split_docstring(doc: str) -> tuple[str, dict[str, str], list[str]]:
    """``(prose, {param: text}, other field lines)`` of a reST docstring."""
    prose: list[str] = []
    params: dict[str, str] = {}
    other: list[str] = []
    current: str | None = None
    for line in inspect.cleandoc(doc).splitlines():
        match = _FIELD.match(line.strip())
        if match:
            kind, name, text = match.groups()
            current = None
            if kind == "param":
                current = name.strip().split()[-1]
                params[current] = text.strip()
            elif kind in ("raises", "return", "returns"):
                other.append(
                    f"{kind.capitalize()}{(' ' + name.strip()) if name.strip() else ''}: {text.strip()}"
                )
            continue
        if current is not None and line.startswith((" ", "\t")) and line.strip():
            params[current] += " " + line.strip()
            continue
        current = None
        prose.append(line)
    return "\n".join(prose).strip(), params, other


def _md(text: str) -> str:
    """reST inline markup to Markdown: ``code`` -> `code`, :role:`~a.b.C` -> `C`."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", text)
    return text.replace("``", "`")


def _public_classes(module: Any, names: list[str] | None) -> list[type]:
    if names is not None:
        return [getattr(module, name) for name in names]
    return [
        obj
        for name, obj in sorted(vars(module).items())
        if inspect.isclass(obj) and obj.__module__ == module.__name__ and not name.startswith("_")
    ]


def _params_along_bases(cls: type) -> dict[str, str]:
    params: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass.__module__.startswith(PACKAGE) and klass.__doc__:
            params.update(_split_docstring(klass.__doc__)[1])
    return params


def _signature(func: Any, drop_self: bool = True) -> str:
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return "(...)"
    params = list(sig.parameters.values())
    if drop_self and params and params[0].name in ("self", "cls"):
        params = params[1:]
    parts: list[str] = []
    star_done = False
    for param in params:
        if param.kind is param.KEYWORD_ONLY and not star_done:
            parts.append("*")
            star_done = True
        if param.kind is param.VAR_POSITIONAL:
            star_done = True
        prefix = (
            "*" if param.kind is param.VAR_POSITIONAL else "**" if param.kind is param.VAR_KEYWORD else ""
        )
        text = prefix + param.name
        if param.annotation is not param.empty:
            text += f": {_annotation(param.annotation)}"
        if param.default is not param.empty:
            text += f" = {param.default!r}" if param.annotation is not param.empty else f"={param.default!r}"
        parts.append(text)
    result = f"({', '.join(parts)})"
    if sig.return_annotation is not sig.empty and _annotation(sig.return_annotation) != "None":
        result += f" -> {_annotation(sig.return_annotation)}"
    return result


def _annotation(annotation: Any) -> str:
    """An annotation as written in the source (they are strings: ``from __future__ import annotations``)."""
    return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)


def _own_public_methods(cls: type) -> list[tuple[str, Any]]:
    methods = []
    for name, value in vars(cls).items():
        if name.startswith("_") or not (
            inspect.isfunction(value) or isinstance(value, (classmethod, staticmethod))
        ):
            continue
        func = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
        if func.__doc__:
            methods.append((name, func))
    return sorted(methods)


def _class_block(cls: type) -> list[str]:
    prose, _, _ = _split_docstring(cls.__doc__ or "")
    out = [f"### `{cls.__name__}`", "", f"`{cls.__module__}.{cls.__name__}`", ""]
    if prose:
        out += [_md(prose), ""]
    init = cls.__dict__.get("__init__")
    if init is not None:
        out += ["```python", f"{cls.__name__}{_signature(init)}", "```", ""]
    params = _params_along_bases(cls)
    if init is not None:
        names = [p for p in inspect.signature(init).parameters if p not in ("self", "kwargs", "args")]
        documented = [(n, params[n]) for n in names if n in params]
        documented += [(n, t) for n, t in params.items() if n not in names]
    else:
        documented = list(params.items())
    if documented:
        out += ["Parameters:", ""]
        out += [f"- `{name}`: {_md(text)}" for name, text in documented]
        out.append("")
    fields = [f for f in ("template_fields",) if getattr(cls, f, None)]
    for f in fields:
        out += [f"Templated fields: {', '.join(f'`{x}`' for x in getattr(cls, f))}", ""]
    methods = _own_public_methods(cls)
    if methods:
        out += ["Methods:", ""]
        for name, func in methods:
            doc_prose, doc_params, doc_other = _split_docstring(func.__doc__ or "")
            first = _md(doc_prose.split("\n\n", 1)[0].replace("\n", " "))
            out.append(f"- `{name}{_signature(func)}`: {first}")
            rest = doc_prose.split("\n\n", 1)[1] if "\n\n" in doc_prose else ""
            if rest:
                out.append(textwrap.indent(_md(rest), "  "))
            for pname, ptext in doc_params.items():
                out.append(f"  - `{pname}`: {_md(ptext)}")
            for line in doc_other:
                out.append(f"  - {_md(line)}")
        out.append("")
    return out


def render() -> str:
    sys.path.insert(0, str(ROOT))
    lines = [
        "# API reference",
        "",
        "Generated from the docstrings by `scripts/gen_api_docs.py` -- do not edit by hand; run",
        "`.venv/bin/python scripts/gen_api_docs.py` after changing a docstring or a signature.",
        "Guides: [operators](operators.md), [example DAGs](example-dags.md), [authorize](authorize.md),",
        "[consent health](consent-health.md), [sandbox](sandbox.md).",
        "",
    ]
    for title, module_name, names in SECTIONS:
        module = importlib.import_module(module_name)
        lines += [f"## {title}", ""]
        for cls in _public_classes(module, names):
            lines += _class_block(cls)
    text = "\n".join(lines)
    text = re.sub(r"\n{3,}", "\n\n", text).rstrip() + "\n"
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/api.md is not current")
    args = parser.parse_args()
    text = render()
    if args.check:
        current = OUTPUT.read_text() if OUTPUT.exists() else ""
        if current != text:
            print(f"{OUTPUT.relative_to(ROOT)} is out of date: run scripts/gen_api_docs.py", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT.relative_to(ROOT)} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
