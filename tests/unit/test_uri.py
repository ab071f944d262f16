"""The request target, read as dockerd's router and Go's url package read it."""

import pytest

from authz.decoding.errors import RequestRefused
from authz.decoding.uri import Query, go_clean, go_unescape, parse_target, version_compare


@pytest.mark.parametrize("raw, path, version, explicit", [
    ("/containers/create", "/containers/create", "1.41", False),
    ("/v1.41/containers/create", "/containers/create", "1.41", True),
    ("/v1.23/containers/x/start", "/containers/x/start", "1.23", True),
    ("/v1/containers/json", "/containers/json", "1", True),
    ("/containers%2Fcreate", "/containers/create", "1.41", False),
    ("/%63ontainers/create", "/containers/create", "1.41", False),
    ("/v1.41%2Fcontainers/create", "/containers/create", "1.41", True),
    ("/%76%31.41/containers/create", "/containers/create", "1.41", True),
    ("/containers/a+b/json", "/containers/a+b/json", "1.41", False),  # '+' stays in a path
    ("/images/127.0.0.1:5000/team/app:1/json", "/images/127.0.0.1:5000/team/app:1/json", "1.41", False),
])
def test_path_is_decoded_and_version_stripped(raw, path, version, explicit):
    target = parse_target("POST", raw)
    assert (target.path, target.version, target.explicit_version) == (path, version, explicit)


@pytest.mark.parametrize("raw", [
    "http://dockerd/containers/create",        # absolute-form
    "//containers/create",                      # mux would redirect
    "/containers/../containers/create",
    "/containers/./create",
    "/containers/%2e%2e/containers/create",     # ../ once decoded
    "/containers/create#frag",
    "/containers/create%",                      # bad escape
    "/containers/create%zz",
    "/containers/%ff/json",                     # not UTF-8
    "/containers/%00/json",
    "*",
    "",
])
def test_hostile_targets_are_refused(raw):
    with pytest.raises(RequestRefused) as info:
        parse_target("POST", raw)
    assert info.value.rule == "request-uri"


@pytest.mark.parametrize("method", ["", "post", "PO ST", "GET\r\n"])
def test_odd_methods_are_refused(method):
    with pytest.raises(RequestRefused):
        parse_target(method, "/_ping")


@pytest.mark.parametrize("a, b, expected", [
    ("1.23", "1.24", -1), ("1.24", "1.24", 0), ("1.041", "1.41", 0), ("1.41", "1.9", 1),
    ("1", "1.0", 0), ("1..2", "1.0.2", 0), ("2", "1.99", 1), ("1.x", "1.0", 0),
])
def test_version_compare_like_moby(a, b, expected):
    assert version_compare(a, b) == expected


def test_legacy_version_flag():
    assert parse_target("POST", "/v1.23/containers/x/start").version_below("1.24")
    assert not parse_target("POST", "/v1.024/containers/x/start").version_below("1.24")
    assert not parse_target("POST", "/containers/x/start").version_below("1.24")


def test_query_like_go():
    q = Query.parse("fromImage=a&fromImage=b&tag=x+y&empty=&bare&e=%41")
    assert q.get("fromImage") == "a"  # first wins, like r.Form.Get
    assert q.getall("fromImage") == ["a", "b"]
    assert q.get("tag") == "x y"
    assert q.get("empty") == "" and "bare" in q
    assert q.get("e") == "A"


@pytest.mark.parametrize("raw", ["a=1;b=2", "a=%zz", "a=%"])
def test_query_errors_refuse(raw):
    with pytest.raises(RequestRefused):
        Query.parse(raw)


def test_go_helpers():
    assert go_clean("/a/b/") == "/a/b/"
    assert go_clean("/a//b") == "/a/b"
    assert go_unescape("a%2Fb", query=False) == "a/b"
    assert go_unescape("a+b", query=False) == "a+b"
    assert go_unescape("a+b", query=True) == "a b"
