"""Shell completion for ``ablate``: the script ``ablate completion bash|zsh`` prints, and the
candidates it asks for on each Tab (``ablate completion query``).

The script is a small bash function that hands the command line up to the cursor to
:func:`candidates` in a fresh process; only files are listed (``conf/``, ``./conf``, the
``--config-dir`` folders, the study folders, ``runs/``), nothing heavier than the menu is imported,
so a Tab answers in a fraction of a second. zsh uses the same function through ``bashcompinit``.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["COMMANDS", "SHELLS", "candidates", "script"]

COMMANDS = ("train", "sweep", "plan", "worker", "report", "ui", "dashboard", "studies", "completion")
SHELLS = ("bash", "zsh")
_TOP_FLAGS = ("--help", "--version")
_FLAGS = {
    "train": ("--help", "--hydra-help", "--cfg", "--resolve", "--package", "--multirun", "--info",
              "--config-dir", "--shell-completion"),
    "sweep": ("--help", "--cfg", "--package", "--info", "--config-dir"),
    "plan": ("--help", "--cfg", "--package", "--config-dir"),
    "worker": ("--help", "--storage", "--config-dir"),
    "report": ("--help", "--format", "--out", "--experiment", "--tag", "--target"),
    "ui": ("--help", "--port"),
    "dashboard": ("--help", "--storage", "--port"),
    "studies": ("--help", "--storage"),
    "completion": ("--help",),
}
_WORDBREAKS = "=:"  # bash splits words there (COMP_WORDBREAKS): a candidate replaces what follows


def script(shell: str, program: Sequence[str] | None = None) -> str:
    """The completion script for ``shell`` (bash or zsh); ``program`` is how to run ablate."""
    command = " ".join(shlex.quote(p) for p in (program or _program()))
    body = f"""# ablate shell completion ({shell}); load it with: eval "$(ablate completion {shell})"
_ablate_complete() {{
    local IFS=$'\\n'
    COMPREPLY=($({command} completion query -- "${{COMP_LINE:0:COMP_POINT}}" 2>/dev/null))
    if [[ ${{#COMPREPLY[@]}} -eq 1 && ${{COMPREPLY[0]}} == *= ]]; then
        compopt -o nospace 2>/dev/null
    fi
    return 0
}}
complete -o default -F _ablate_complete ablate
"""
    if shell == "zsh":
        return "autoload -U +X bashcompinit && bashcompinit\n" + body
    return body


def _program() -> list[str]:
    """``ablate`` when the console script runs, else this interpreter with ``-m ablate``."""
    if Path(sys.argv[0]).name == "ablate":
        return ["ablate"]
    return [sys.executable, "-m", "ablate"]


def candidates(line: str) -> list[str]:
    """What may follow ``line`` (the command line up to the cursor), as bash will insert them."""
    try:
        words = shlex.split(line)
    except ValueError:  # an open quote
        words = line.split()
    current = "" if not words or line[-1:].isspace() else words.pop()
    words = words[1:]  # the program's name
    if not words:
        found = [c for c in (*COMMANDS, *_TOP_FLAGS) if c.startswith(current)]
    elif current.startswith("-"):
        found = [f for f in _FLAGS.get(words[0], ()) if f.startswith(current)]
    else:
        found = _after(words[0], words[1:], current)
    cut = max(current.rfind(c) for c in _WORDBREAKS) + 1
    return [c[cut:] for c in found]


def _after(command: str, before: list[str], current: str) -> list[str]:
    positional = [w for w in before if not w.startswith("-") and "=" not in w]
    if command == "completion":
        words = [*SHELLS, "query"] if not positional else []
    elif command == "studies":
        words = ["show", "delete", *_stored()] if not positional else _stored()
    elif command in ("sweep", "plan", "worker") and not positional:
        words = _studies()
    elif command in ("sweep", "plan"):
        words = _study_overrides(current)
    elif command == "report":
        words = _stored() if not positional else []
    elif command == "train":
        words = _train_overrides(current)
    else:
        words = []
    return sorted(w for w in words if w.startswith(current))


def _train_overrides(current: str) -> list[str]:
    from ablate.config import CONF_DIR, user_conf_dirs
    from ablate.config.schema import Config
    from ablate.menu import CLIP_TARGETS, NORMS

    folders = [CONF_DIR, *user_conf_dirs()]
    groups = sorted({p.name for f in folders for p in f.iterdir() if p.is_dir()})
    key, sep, _ = current.partition("=")
    if not sep:
        fields = [f.name for f in dataclasses.fields(Config) if f.name not in groups]
        return [f"{g}=" for g in groups] + [f"{f}=" for f in fields] + [f"{g}." for g in groups]
    if key in groups:
        return [f"{key}={p.stem}" for f in folders for p in sorted((f / key).glob("*.yaml"))]
    values = {"norm": NORMS, "clip.to": CLIP_TARGETS}.get(key, ())
    return [f"{key}={v}" for v in values]


def _study_overrides(current: str) -> list[str]:
    from ablate.config import shipped_folder
    from ablate.sweep.schema import StudyConfig

    key, sep, _ = current.partition("=")
    if not sep:
        return [f"{f.name}=" for f in dataclasses.fields(StudyConfig)] + ["params.", "fixed."]
    return [f"{key}={p.stem}" for p in sorted((shipped_folder("sweeps") / key).glob("*.yaml"))]


def _studies() -> list[str]:
    from ablate.config import config_dirs, shipped_folder

    folders = [*config_dirs(), Path("sweeps"), shipped_folder("sweeps")]
    return sorted({p.stem for f in folders if f.is_dir() for p in f.glob("*.yaml")})


def _stored() -> list[str]:
    runs = Path("runs")
    return sorted(p.parent.name for p in runs.glob("*/journal.log")) if runs.is_dir() else []


def main(args: Sequence[str]) -> int:
    """``ablate completion query -- LINE``: one candidate a line."""
    line = args[-1] if args else ""
    for word in candidates(line):
        print(word)
    return 0


if __name__ == "__main__":  # pragma: no cover - the script calls ``ablate completion query``
    raise SystemExit(main(sys.argv[1:]))
