"""The library's house rules, checked on its source: the one-way import flow, one quirk
convention, no code from data, and log lines instead of prints."""

import ast
import dataclasses
import inspect
import json
import re
from pathlib import Path

import pytest

import ssast_teach
from ssast_teach.quirks import QUIRKS

PACKAGE = Path(ssast_teach.__file__).resolve().parent
README = PACKAGE.parent / "README.md"

# The import flow of the README and of ssast_teach/__init__.py: a module imports only modules of
# an earlier group (the package root, which imports nothing, is always allowed).
FLOW = [
    ("quirks", "stats", "download", "audio"),
    ("datasets",),
    ("baselines",),
    ("patches",),
    ("masking",),
    ("losses",),
    ("model",),
    ("checkpoints",),
    ("training",),
    ("pretrain", "finetune"),
    ("evaluate",),
    ("ablations", "study"),
    ("exercises",),
    ("grading",),
    ("assignments", "bench", "export", "__main__"),
]
LEVEL = {name: level for level, group in enumerate(FLOW) for name in group}


def _modules() -> dict[str, Path]:
    found = {p.stem: p for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    found["exercises"] = PACKAGE / "exercises"
    return found


def _sources(name: str) -> list[Path]:
    path = _modules()[name]
    return sorted(path.glob("*.py")) if path.is_dir() else [path]


def _imported(path: Path) -> set[str]:
    """The ssast_teach modules ``path`` imports, anywhere in the file (lazy imports too)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ssast_teach"):
            parts = node.module.split(".")
            if len(parts) > 1:
                out.add(parts[1])
            else:  # from ssast_teach import training
                out |= {a.name for a in node.names if a.name in LEVEL}
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names
                    if a.name.startswith("ssast_teach.")}
    return out


def test_every_module_has_a_place_in_the_flow():
    assert sorted(_modules()) == sorted(LEVEL)


@pytest.mark.parametrize("name", sorted(LEVEL))
def test_imports_flow_one_way(name):
    for path in _sources(name):
        for other in _imported(path) - {name}:
            assert LEVEL[other] < LEVEL[name], (
                f"{path.relative_to(PACKAGE.parent)} imports ssast_teach.{other}, which is not to "
                f"its left in the import flow"
            )


def test_readme_and_package_docstring_state_the_same_flow():
    for text in (ssast_teach.__doc__, README.read_text()):
        flow = re.search(r"Imports flow one way(.*?)\n\n", text, re.S).group(1)
        named = re.findall(r"`+([a-z_]+)`+", flow)
        order = [n for n in named if n in LEVEL]
        assert sorted(set(order)) == sorted(LEVEL), flow
        levels = [LEVEL[n] for n in order]
        assert levels == sorted(levels), flow


def _quirk_keywords() -> set[str]:
    """Every ``*_quirk`` keyword of a library function and every ``*_quirk`` config field."""
    from ssast_teach import checkpoints, finetune, losses, model, pretrain, training

    found = set()
    for module in (losses, model, checkpoints, training, pretrain, finetune):
        for _, obj in inspect.getmembers(module):
            targets = [obj]
            if inspect.isclass(obj):
                targets = [getattr(obj, n) for n in vars(obj) if callable(getattr(obj, n, None))]
                if dataclasses.is_dataclass(obj):
                    found |= {f.name for f in dataclasses.fields(obj) if f.name.endswith("_quirk")}
            for fn in targets:
                try:
                    params = inspect.signature(fn).parameters
                except (TypeError, ValueError):
                    continue
                found |= {p for p in params if p.endswith("_quirk")}
    return found


def test_one_quirk_convention():
    """Every quirk switch is named ``<name>_quirk``, defaults to True (the official behaviour),
    and is listed in ssast_teach.quirks.QUIRKS; the old mixed-polarity names are gone."""
    from ssast_teach.finetune import FinetuneConfig
    from ssast_teach.pretrain import PretrainConfig

    keywords = _quirk_keywords()
    listed = {q.keyword for q in QUIRKS}
    assert keywords and keywords <= listed, keywords - listed
    for config in (PretrainConfig(), FinetuneConfig()):
        flags = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
                 if f.name.endswith("_quirk")}
        assert flags and all(value is True for value in flags.values()), flags
    old = re.compile(r"paper_softmax|warmup_every_step|ce_soft_targets|valid_loss_from_logits|"
                     r"official_quirks|official_warmup_lr")
    for path in PACKAGE.rglob("*.py"):
        assert not old.search(path.read_text()), path


def test_no_code_from_data():
    """Every torch.load in the library passes weights_only=True."""
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                kw = {k.arg: ast.unparse(k.value) for k in node.keywords}
                assert kw.get("weights_only") == "True", f"{path}:{node.lineno}"


def test_library_logs_rather_than_prints():
    """print only in a command line's own main() (its output) and in the exercise checkers,
    whose check lines are what a learner reads."""
    for path in PACKAGE.rglob("*.py"):
        if "exercises" in path.parts:
            continue
        tree = ast.parse(path.read_text())
        prints = {node for node in ast.walk(tree) if isinstance(node, ast.Call)
                  and ast.unparse(node.func) == "print"}
        allowed = {node for fn in ast.walk(tree) if isinstance(fn, ast.FunctionDef)
                   and fn.name in ("main", "check_env") for node in ast.walk(fn)}
        assert not prints - allowed, [f"{path}:{n.lineno}" for n in prints - allowed]


# ---------------------------------------------------------------- documents a reader can open

ROOT = PACKAGE.parent
SKIPPED_DIRS = {".git", ".venv", "runs", "cache", "node_modules", ".ipynb_checkpoints",
                "__pycache__", ".pytest_cache", ".ruff_cache"}  # fmt: skip
# A private specification the project was written from, which a learner cannot read: the
# official behaviour is cited by the official repository's file and function instead.
PRIVATE_SPEC = re.compile(r"\bSPEC\b|\bSPEC\.md\b|shared/spec")
MARKDOWN_LINK = re.compile(r"\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
MD_NAME = re.compile(r"(?<![\w./:-])((?:[\w.-]+/)*[\w.-]+\.md)\b")


def _course_texts() -> list[Path]:
    """The files a learner reads: the library, the tests, both editions of the chapters and
    the project's markdown documents (not the datasets' own READMEs under data/*/, which are
    their authors' text, kept as published)."""
    found = {p for pattern in ("ssast_teach/**/*.py", "tests/**/*.py", "chapters/**/*.ipynb",
                               "*.md", "chapters/**/*.md", "data/*.md")  # fmt: skip
             for p in ROOT.glob(pattern)}
    return sorted(p for p in found if not SKIPPED_DIRS & set(p.relative_to(ROOT).parts))


def _texts_of(path: Path) -> list[tuple[str, str, bool]]:
    """(where, text, is markdown) pieces of a file: a notebook's cells one by one (source and
    outputs)."""
    if path.suffix != ".ipynb":
        return [("", path.read_text(), path.suffix == ".md")]
    pieces = []
    for k, cell in enumerate(json.loads(path.read_text())["cells"]):
        outputs = "".join("".join(o.get("text", "")) for o in cell.get("outputs", []))
        pieces.append((f" cell {k} ({cell['cell_type']})", "".join(cell["source"]) + outputs,
                       cell["cell_type"] == "markdown"))  # fmt: skip
    return pieces


def _markdown_names() -> set[str]:
    """Every markdown file of the repository, as paths relative to the root."""
    return {p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.md")
            if not SKIPPED_DIRS & set(p.relative_to(ROOT).parts)}  # fmt: skip


def _exists(path: Path, target: str, names: set[str]) -> bool:
    """``target`` relative to the file or to the root, or (a bare name) any file of that name."""
    if (path.parent / target).exists() or (ROOT / target).exists():
        return True
    return "/" not in target and any(n == target or n.endswith("/" + target) for n in names)


def _missing_documents(path: Path, text: str, markdown: bool, names: set[str]) -> list[str]:
    problems = [f"cites {m.group(0)!r}, a document the repository lacks: cite the official "
                "repository's file and function, or explain the behaviour where it is used"
                for m in PRIVATE_SPEC.finditer(text)]  # fmt: skip
    for m in MARKDOWN_LINK.finditer(text if markdown else ""):
        target = m.group(1).split("#")[0]
        if not target or re.match(r"[a-z][a-z0-9+.-]*:", target):  # a URL, mailto:, an anchor
            continue
        if not _exists(path, target, names):
            problems.append(f"links to {target!r}, which is not in the repository")
    for m in MD_NAME.finditer(text):
        name = m.group(1)
        if re.search(r"https?://\S*$", text[max(0, m.start() - 300) : m.start()]):
            continue  # part of a URL
        if not _exists(path, name, names):
            problems.append(f"names {name!r}, a markdown document the repository lacks")
    return problems


@pytest.mark.parametrize(
    "path", _course_texts(), ids=lambda p: p.relative_to(ROOT).as_posix()
)
def test_no_reference_to_a_document_the_repository_lacks(path):
    """Every document the course cites or links is one a learner has: no private spec, no
    relative link or ``*.md`` name that is not in the repository."""
    if path == Path(__file__).resolve():
        return  # this file spells the patterns out
    names = _markdown_names()
    problems = [f"{path.relative_to(ROOT)}{where}: {problem}"
                for where, text, markdown in _texts_of(path)
                for problem in _missing_documents(path, text, markdown, names)]  # fmt: skip
    assert not problems, "\n".join(problems)


def test_the_document_check_catches_what_it_should_and_only_that():
    names = _markdown_names()
    here = ROOT / "chapters" / "student" / "00_start_here.ipynb"
    text = ("As SPEC 4 says; see [the notes](NOTES.md), the [instructors](../INSTRUCTORS.md), "
            "[the paper](https://arxiv.org/abs/2110.09784), [above](#masking), plan.md, "
            "data/README.md, https://github.com/YuanGongND/ssast/blob/main/README.md and the "
            "official src/run.py and egs/esc50/run_esc_patch.sh")  # fmt: skip
    problems = _missing_documents(here, text, True, names)
    assert len(problems) == 4, problems  # NOTES.md: a broken link and a missing name
    assert "SPEC" in problems[0] and "links to 'NOTES.md'" in problems[1]
    assert "'NOTES.md'" in problems[2] and "'plan.md'" in problems[3]
    assert _missing_documents(here, "x = f[i](NOTES)", False, names) == []  # code, not a link
