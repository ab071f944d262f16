"""JSON bodies read with Go encoding/json's rules."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from authz.moby.gojson import GoObject, InvalidJSON, from_parsed
from authz.moby.gojson import (get_bool, get_map, get_obj, get_str, get_strings, go_fold,
                                   loads)


@pytest.mark.parametrize("key", ["Privileged", "privileged", "PRIVILEGED", "pRiViLeGeD"])
def test_keys_match_case_insensitively(key):
    assert get_bool(loads(f'{{"{key}": true}}'.encode()), "Privileged") is True


@pytest.mark.parametrize("key, field", [
    ("Bind\u017f", "Binds"),            # long s folds to s in Go
    ("Networ\u212aMode", "NetworkMode"),
    ("\u017fecurityOpt", "SecurityOpt"),
    ("Lin\u212as", "Links"),
])
def test_go_special_folds(key, field):
    assert go_fold(key) == go_fold(field)


@pytest.mark.parametrize("key", ["Privileged\u0130", "Priv\u0131leged", "Privileged "])
def test_other_unicode_does_not_fold(key):
    doc = loads(f'{{"{key}": true}}'.encode())
    assert get_bool(doc, "Privileged") is False


@pytest.mark.parametrize("body", [
    b'{"Privileged": false, "Privileged": true}',
    b'{"Privileged": true, "privileged": false}',
    b'{"Privileged": null, "PRIVILEGED": true}',
])
def test_duplicate_struct_fields_are_ambiguous(body):
    with pytest.raises(InvalidJSON) as info:
        get_bool(loads(body), "Privileged")
    assert info.value.ambiguous


def test_map_keys_are_exact_and_last_wins():
    doc = loads(b'{"Sysctls": {"a": "1", "A": "2", "a": "3"}}')
    assert get_map(doc, "Sysctls") == {"a": "3", "A": "2"}


def test_null_is_zero_value():
    doc = loads(b'{"Privileged": null, "Binds": null, "HostConfig": null, "Image": null}')
    assert get_bool(doc, "Privileged") is False
    assert get_strings(doc, "Binds") is None
    assert get_obj(doc, "HostConfig") is None
    assert get_str(doc, "Image") == ""


@pytest.mark.parametrize("body, getter, name", [
    (b'{"Privileged": 1}', get_bool, "Privileged"),
    (b'{"Privileged": "true"}', get_bool, "Privileged"),
    (b'{"Image": 5}', get_str, "Image"),
    (b'{"Binds": "/:/x"}', get_strings, "Binds"),
    (b'{"Binds": [1]}', get_strings, "Binds"),
    (b'{"HostConfig": []}', get_obj, "HostConfig"),
])
def test_wrong_types_are_refused(body, getter, name):
    with pytest.raises(InvalidJSON) as info:
        getter(loads(body), name)
    assert not info.value.ambiguous


def test_strslice_accepts_a_string():
    assert get_strings(loads(b'{"CapAdd": "SYS_ADMIN"}'), "CapAdd", strslice=True) == ["SYS_ADMIN"]


@pytest.mark.parametrize("body", [
    b'{"a": NaN}', b'{"a": Infinity}', b'{"a": 1} {"b": 2}', b'\xef\xbb\xbf{}',
    b'{"a": "\xff"}', b'[' * 100000, b'', b'{',
])
def test_unreadable_bodies_are_refused(body):
    with pytest.raises(InvalidJSON) as info:
        loads(body)
    assert not info.value.ambiguous


def _pairs(value):
    """A parsed value with its GoObjects as lists of pairs (comparable)."""
    if isinstance(value, GoObject):
        return ("obj", [(k, _pairs(v)) for k, v in value.pairs])
    if isinstance(value, list):
        return [_pairs(v) for v in value]
    return value


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30)


@given(_JSON_VALUES)
def test_from_parsed_gives_what_loads_gives(value):
    """dockerd's answers, already parsed, are read by the checks exactly as a body would be."""
    assert _pairs(from_parsed(value)) == _pairs(loads(json.dumps(value).encode()))


@given(st.text())
def test_a_key_folds_the_same_with_or_without_the_ascii_shortcut(key):
    """GoObject folds ASCII keys with str.lower(): the same as Go's fold (go_fold)."""
    obj = GoObject([(key, 1)])
    assert obj.field(key.upper() if key.isascii() else key, "") == 1
    assert (key.lower() if key.isascii() else go_fold(key)) == go_fold(key)
