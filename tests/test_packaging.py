"""The hand-written package list in pyproject.toml covers every package folder, and no top-level
`kernels` module is installed (that name belongs to another PyPI package that transformers probes)."""
import pathlib
import re

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
