"""Image reference normalization, as dockerd's distribution/reference does it."""

import pytest

from authz.moby.reference import (
    InvalidReference,
    Reference,
    is_image_id,
    manifest_tag_for_signature,
    parse_reference,
    parse_repository,
    pull_reference,
)

D = "sha256:" + "ab" * 32
E = "sha256:" + "cd" * 32


@pytest.mark.parametrize("text, expected", [
    ("busybox", "docker.io/library/busybox"),
    ("busybox:1.36", "docker.io/library/busybox:1.36"),
    ("library/busybox", "docker.io/library/busybox"),
    ("docker.io/busybox", "docker.io/library/busybox"),
    ("index.docker.io/busybox", "docker.io/library/busybox"),
    ("registry-1.docker.io/team/app", "docker.io/team/app"),
    ("local/busybox:1", "docker.io/local/busybox:1"),
    ("team/app/sub:2", "docker.io/team/app/sub:2"),
    ("127.0.0.1:5000/team/app:1", "127.0.0.1:5000/team/app:1"),
    ("127.0.0.1:5000/app", "127.0.0.1:5000/app"),
    ("localhost/app", "localhost/app"),
    ("localhost:5000/app:v1", "localhost:5000/app:v1"),
    ("registry.example.com/a/b/c", "registry.example.com/a/b/c"),
    ("Registry.Example.com/a", "Registry.Example.com/a"),   # upper case: a host
    ("localhost:5000", "docker.io/library/localhost:5000"),  # no slash: name:tag
    (f"busybox@{D}", f"docker.io/library/busybox@{D}"),
    (f"busybox:1@{D}", f"docker.io/library/busybox:1@{D}"),
    ("a__b/c-d.e_f:x.y-z", "docker.io/a__b/c-d.e_f:x.y-z"),
])
def test_normalization(text, expected):
    assert str(parse_reference(text)) == expected


@pytest.mark.parametrize("text", [
    "", "team/UPPER", "busybox:", "busybox:bad/tag", ":tag", "a//b", "a/", "-a/b",
    "busybox@sha256:123", "busybox@" + D + "x", "ab" * 32, "a/b:" + "t" * 129,
    "127.0.0.1:5000/" + "a" * 250, "a b", "a/b c",
])
def test_invalid(text):
    with pytest.raises(InvalidReference):
        parse_reference(text)


def test_parts_and_defaults():
    ref = parse_reference("127.0.0.1:5000/team/app")
    assert ref == Reference("127.0.0.1:5000", "team/app")
    assert ref.name_only
    assert ref.repository == "127.0.0.1:5000/team/app"
    assert str(ref.with_default_tag()) == "127.0.0.1:5000/team/app:latest"
    both = parse_reference(f"127.0.0.1:5000/team/app:1@{D}")
    assert str(both.favor_digest()) == f"127.0.0.1:5000/team/app@{D}"
    assert str(both.with_default_tag()) == str(both)


def test_api_host_for_docker_hub():
    assert parse_reference("busybox").api_host == "registry-1.docker.io"
    assert parse_reference("127.0.0.1:5000/x").api_host == "127.0.0.1:5000"


def test_repository_only():
    assert parse_repository("127.0.0.1:5000/team/app").repository == "127.0.0.1:5000/team/app"
    with pytest.raises(InvalidReference):
        parse_repository("127.0.0.1:5000/team/app:1")


def test_image_ids_are_not_names():
    assert is_image_id("ab" * 32)
    assert is_image_id(D)
    assert not is_image_id("busybox")
    assert not is_image_id("abc123")          # a short id is also a valid name
    with pytest.raises(InvalidReference):
        parse_reference("ab" * 32)


@pytest.mark.parametrize("from_image, tag, expected", [
    ("busybox", "", "docker.io/library/busybox"),            # every tag!
    ("busybox:", "", "docker.io/library/busybox"),           # `pull -a` trailing colon
    ("busybox", "1", "docker.io/library/busybox:1"),
    ("busybox:1", "2", "docker.io/library/busybox:2"),       # the tag parameter wins
    ("busybox:1", D, f"docker.io/library/busybox@{D}"),      # a digest in `tag` replaces
    (f"busybox@{D}", "", f"docker.io/library/busybox@{D}"),
    (f"busybox@{D}", "2", f"docker.io/library/busybox:2@{D}"),
    (f"busybox@{D}", E, f"docker.io/library/busybox@{E}"),
])
def test_pull_reference_like_dockerd(from_image, tag, expected):
    assert str(pull_reference(from_image, tag)) == expected


def test_pull_reference_bad_tag():
    with pytest.raises(InvalidReference):
        pull_reference("busybox", "bad/tag")


def test_signature_tag():
    assert manifest_tag_for_signature(D) == "sha256-" + "ab" * 32 + ".sig"
