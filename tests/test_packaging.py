"""The hand-written package list in pyproject.toml covers every package folder, and no top-level
`kernels` module is installed (that name belongs to another PyPI package that transformers probes)."""
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _listed_packages() -> set[str]:
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^packages = \[(.*?)\]", text, re.S | re.M).group(1)
    return set(re.findall(r'"([\w.]+)"', block))


def _package_folders() -> set[str]:
    found = set()
    for init in (ROOT / "maskedbert").rglob("__init__.py"):
        rel = init.parent.relative_to(ROOT)
        found.add(".".join(rel.parts))
    for init in (ROOT / "kernels").rglob("__init__.py"):
        rel = init.parent.relative_to(ROOT / "kernels")
        found.add(".".join(("maskedbert", "kernels") + rel.parts))
    return found


def test_every_package_folder_is_listed():
    missing = _package_folders() - _listed_packages()
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"


def test_no_listed_package_is_missing_on_disk():
    stale = _listed_packages() - _package_folders()
    assert not stale, f"pyproject.toml lists packages with no folder: {sorted(stale)}"


def test_kernels_import_as_maskedbert_kernels():
    import maskedbert.kernels as k

    assert pathlib.Path(k.__file__).resolve().parent == ROOT / "kernels"
    assert callable(k.masked_linear)


def _run_from_root(code: str, **env_extra: str):
    import os
    import subprocess
    import sys

    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_repo_root_never_imports_the_folder_as_kernels(tmp_path):
    """From the repo root the folder is first on sys.path; `import kernels` must give the next one."""
    other = tmp_path / "kernels"
    other.mkdir()
    (other / "__init__.py").write_text("WHO = 'the other kernels package'\n")
    out = _run_from_root("import kernels; print(kernels.__file__); print(kernels.WHO)",
                         PYTHONPATH=str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [str(other / "__init__.py"), "the other kernels package"]


def test_repo_root_without_another_kernels_raises_module_not_found():
    code = ("import sys\nsys.path = [p for p in sys.path if 'site-packages' not in p and 'dist-packages' not in p]\n"
            "try:\n    import kernels\nexcept ModuleNotFoundError as e:\n    print('missing', e.name)\n"
            "print('kernels' in sys.modules)\n")
    out = _run_from_root(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["missing", "kernels", "False"]


@pytest.mark.slow
def test_transformers_bert_imports_from_repo_root():
    """transformers >= 5.25 imports the PyPI `kernels` when a model module loads."""
    code = ("import transformers.models.bert.modeling_bert\nimport sys\n"
            "k = sys.modules.get('kernels')\nprint(getattr(k, '__file__', None))\n"
            "import maskedbert.kernels as mk\nprint(mk.__file__)\n")
    out = _run_from_root(code)
    assert out.returncode == 0, out.stderr
    pypi_kernels, ours = out.stdout.splitlines()
    assert pypi_kernels == "None" or not pathlib.Path(pypi_kernels).resolve().is_relative_to(ROOT / "kernels")
    assert pathlib.Path(ours).resolve() == ROOT / "kernels" / "__init__.py"
