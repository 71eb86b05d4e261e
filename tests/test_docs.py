"""The operator documentation stays true: the README's option table and the options in
ckan.ini.example are config_declaration.yaml's, the example configuration is accepted
by CKAN, and the README shows every command with an example that its options accept."""

from __future__ import annotations

import configparser
import re
import shlex

import yaml

from ckanext.dcor_depot import cli

from .conftest import REPO_DIR, load_script
from .test_config import site_ini

config_docs = load_script("config_docs")
README = REPO_DIR / "README.md"
INI_EXAMPLE = REPO_DIR / "ckan.ini.example"
PREFIXES = ("dcor_object_store.", "ckanext.dcor_depot.")


def declared_keys() -> set[str]:
    return {option["key"] for group in config_docs.groups() for option in group["options"]}


def test_readme_table_and_ini_example_are_generated_from_the_declaration():
    assert config_docs.out_of_date() == [], "run: .venv/bin/python scripts/config_docs.py"
    table = README.read_text()
    for key in declared_keys():
        assert f"| `{key}` |" in table


def test_a_changed_declaration_is_reported_with_the_command_that_fixes_it(
    tmp_path, monkeypatch, capsys
):
    changed = tmp_path / "config_declaration.yaml"
    text = config_docs.DECLARATION.read_text()
    declaration = yaml.safe_load(text)
    declaration["groups"][0]["options"][0]["description"] += " One more sentence."
    changed.write_text(yaml.safe_dump(declaration))
    monkeypatch.setattr(config_docs, "DECLARATION", changed)

    assert config_docs.out_of_date() == [README, INI_EXAMPLE]
    assert config_docs.main(["--check"]) == 1
    assert "README.md is out of date with config_declaration.yaml; run: " in capsys.readouterr().out


def test_the_example_configuration_sets_every_option_and_ckan_accepts_it(tmp_path, run_ckan):
    parser = configparser.RawConfigParser(strict=True)
    parser.read(INI_EXAMPLE)
    options = {key: value for key, value in parser["app:main"].items() if key.startswith(PREFIXES)}
    assert set(options) == declared_keys()
    assert "solr_url" in parser["app:main"] and "ckan.plugins" in parser["app:main"]
    # the extension's values of the example validate (a command that needs no S3)
    result = run_ckan(site_ini(tmp_path, options), "list-all-resources", "--state", "all")
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_readme_shows_every_command_with_an_example_its_options_accept():
    commands = {command.name: command for command in map(cli.__dict__.get, cli.__all__)}
    block = re.search(r"One example of each.*?```bash\n(.*?)```", README.read_text(), re.S)
    examples = [line for line in block.group(1).splitlines() if line.startswith("ckan ")]
    shown = {}
    for line in examples:
        words = shlex.split(line)
        assert words[:3] == ["ckan", "-c", "/etc/ckan/default/ckan.ini"], line
        name, args = words[3], words[4:]
        assert name in commands, f"README shows an unknown command: {line}"
        commands[name].make_context(name, list(args))  # raises on an unknown option
        shown[name] = line
    assert sorted(shown) == sorted(commands)


def test_ci_and_the_vagrantfile_run_the_readmes_commands():
    readme = README.read_text()
    assert "bash scripts/test.sh     # or: make test" in readme
    assert "bash scripts/demo.sh     # or: make demo" in readme
    assert (REPO_DIR / ".ci" / "run").read_text().strip().endswith("bash scripts/test.sh")
    provision = (REPO_DIR / "Vagrantfile").read_text()
    steps = re.search(r"<<-SHELL\n(.*?)\n\s*SHELL", provision, re.S).group(1).split("\n")
    steps = [step.strip() for step in steps]
    assert steps[-1] == "bash scripts/test.sh"
    for step in steps:
        if step.startswith("bash scripts/"):
            assert (REPO_DIR / step.split()[1]).is_file(), step
    makefile = (REPO_DIR / "Makefile").read_text()
    assert "test:" in makefile and "\tbash scripts/test.sh\n" in makefile


def layout_names() -> tuple[set[str], set[str]]:
    """The paths the README's Layout section names, and the folders whose files it lists.

    A line's names stand before the first gap of two spaces (``a.py, b.py``); a
    name ending in ``/`` is a folder, and the lines indented below it are inside it.
    Lines indented as far as the descriptions are continuations.
    """
    block = re.search(r"## Layout\n.*?```\n(.*?)```", README.read_text(), re.S).group(1)
    named, listed = set(), set()
    folders: list[tuple[int, str]] = []
    for line in block.splitlines():
        indent = len(line) - len(line.lstrip())
        if not line.strip() or indent >= 20:
            continue
        while folders and folders[-1][0] >= indent:
            folders.pop()
        parent = folders[-1][1] if folders else ""
        if parent:
            listed.add(parent)
        for name in re.split(r"\s{2,}", line.strip())[0].split(", "):
            path = parent + name.strip(",")
            named.add(path.rstrip("/"))
            if name.endswith("/"):
                folders.append((indent, path))
    return named, {folder.rstrip("/") for folder in listed}


def test_the_layout_section_matches_the_tree():
    named, listed = layout_names()
    for path in named:
        assert (REPO_DIR / path).exists(), f"README's Layout names {path}, which does not exist"
    package = REPO_DIR / "ckanext" / "dcor_depot"
    for module in package.rglob("*.py"):
        relative = module.relative_to(REPO_DIR)
        if module.name == "__init__.py" or str(relative) in named:
            continue
        # a module is named itself, or lies below a folder that is named and whose files
        # are not listed one by one
        folders = [str(parent) for parent in relative.parents]
        covered = next((f for f in folders if f in named), None)
        assert covered is not None and covered not in listed, (
            f"README's Layout does not name {relative}"
        )


def test_the_readme_names_every_test_file_in_how_the_tests_are_organised():
    block = re.search(r"## How the tests are organised\n.*?```\n(.*?)```", README.read_text(), re.S)
    named = set(re.findall(r"\btest_\w+\.py\b", block.group(1)))
    files = [p.name for p in (REPO_DIR / "tests").rglob("test_*.py")]
    assert len(files) == len(set(files)), "two test files share a name: the list is ambiguous"
    assert named == set(files)
