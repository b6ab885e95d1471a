"""Hostile or broken spec files (YAML tags, alias bombs, deep nesting, bad encodings,
duplicate and merge keys, several documents, huge files): each refused with one line
naming the file, the line and the field."""

from __future__ import annotations

import time

from tests.spec_files import BASE, _in_tmp, error_of, write  # noqa: F401 (_in_tmp: an autouse fixture)


# --------------------------------------------------------------------------- hostile or broken files


def test_duplicate_key(tmp_path):
    write(tmp_path / "d.yaml", BASE + "decoder: {layers: 1}\n")
    err = error_of("d.yaml")
    assert str(err) == "d.yaml:15: decoder: duplicate key 'decoder' at lines 8 and 15"


def test_python_tag_is_refused(tmp_path):
    write(tmp_path / "p.yaml", "name: x\nfamily: !!python/object/apply:os.system ['touch pwned']\n")
    assert str(error_of("p.yaml")) == "p.yaml:2: family: tag !!python/object/apply:os.system is not allowed"
    assert not (tmp_path / "pwned").exists()
    write(tmp_path / "q.yaml", "name: !custom x\n")
    assert "tag !custom is not allowed" in str(error_of("q.yaml"))


def test_billion_laughs_is_refused_fast(tmp_path):
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    prev = "a"
    for name in "bcdefghi":
        text += f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]\n"
        prev = name
    write(tmp_path / "bomb.yaml", text)
    start = time.perf_counter()
    err = error_of("bomb.yaml")
    assert time.perf_counter() - start < 5
    assert err.file == "bomb.yaml" and "more than 10000 values" in err.message


def test_recursive_alias_is_refused(tmp_path):
    write(tmp_path / "r.yaml", "a: &x [*x]\n")
    assert "nesting deeper than 64" in str(error_of("r.yaml"))


def test_deep_nesting_is_refused(tmp_path):
    write(tmp_path / "deep.yaml", "name: x\nd: " + "[" * 10_000 + "]" * 10_000 + "\n")
    err = error_of("deep.yaml")
    assert (err.file, err.line) == ("deep.yaml", 2) and "nesting deeper than 64 levels" in err.message
    block = "".join("  " * i + f"k{i}:\n" for i in range(100)) + "  " * 100 + "v: 1\n"
    write(tmp_path / "block.yaml", block)
    assert "nesting deeper than 64 levels" in str(error_of("block.yaml"))


def test_non_utf8(tmp_path):
    (tmp_path / "latin.yaml").write_bytes(b"name: x\ndescription: caf\xe9\n")
    err = error_of("latin.yaml")
    assert (err.file, err.line) == ("latin.yaml", 2) and "not UTF-8" in err.message


def test_empty_file(tmp_path):
    write(tmp_path / "empty.yaml", "")
    assert str(error_of("empty.yaml")) == "empty.yaml: empty spec file"
    write(tmp_path / "comments.yaml", "# only a comment\n")
    assert "empty spec file" in str(error_of("comments.yaml"))


def test_directory_instead_of_a_file(tmp_path):
    (tmp_path / "specs.yaml").mkdir()
    assert str(error_of("specs.yaml")) == "specs.yaml: is a directory, not a spec file"
    (tmp_path / "folder").mkdir()
    assert str(error_of("folder")) == "folder: is a directory, not a spec file"


def test_missing_file(tmp_path):
    assert str(error_of("nothere.yaml")) == "nothere.yaml: no such file"


def test_top_level_must_be_a_mapping(tmp_path):
    write(tmp_path / "list.yaml", "- name: x\n")
    assert str(error_of("list.yaml")) == "list.yaml:1: the top level must be a mapping of fields, got a list"
    write(tmp_path / "str.yaml", "just text\n")
    assert "got a string" in str(error_of("str.yaml"))


def test_non_string_keys(tmp_path):
    write(tmp_path / "k.yaml", "name: x\n1: one\n")
    assert str(error_of("k.yaml")) == "k.yaml:2: key '1' is read by YAML as 1, not a string; quote it"
    write(tmp_path / "on.yaml", "name: x\non: 1\n")
    assert "key 'on' is read by YAML as True" in str(error_of("on.yaml"))
    write(tmp_path / "complex.yaml", "name: x\n? [a, b]\n: 1\n")
    assert "keys must be plain strings" in str(error_of("complex.yaml"))


def test_large_file_is_refused(tmp_path):
    write(tmp_path / "big.yaml", "name: x\ndescription: '" + "x" * (1 << 20) + "'\n")
    assert "larger than 1024 KiB" in str(error_of("big.yaml"))


def test_invalid_yaml_syntax(tmp_path):
    write(tmp_path / "syn.yaml", "name: x\ndecoder: {layers: 2\nfamily: y\n")
    err = error_of("syn.yaml")
    assert err.file == "syn.yaml" and err.line is not None and "invalid YAML" in err.message


def test_merge_keys_are_refused(tmp_path):
    write(tmp_path / "m.yaml", "a: &a {x: 1}\nb:\n  <<: *a\n")
    assert "merge keys '<<' are not supported" in str(error_of("m.yaml"))


def test_multiple_documents_are_refused(tmp_path):
    write(tmp_path / "two.yaml", "name: a\n---\nname: b\n")
    assert "invalid YAML" in str(error_of("two.yaml"))
