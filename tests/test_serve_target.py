"""Request targets as routes see them: dot segments resolved, slashes merged, the absolute form accepted."""

from __future__ import annotations

import pytest

from tlskit.serve.target import host_name, split_target


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("/", "/"),
        ("/docs/notes.txt?x=1", "/docs/notes.txt"),
        ("/a/./b/../c", "/a/c"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/a/..", "/"),
        ("//a///b//", "/a/b/"),
        ("/a/%2e%2E/b", "/b"),
        ("/a/%2e/b", "/a/b"),
        ("/api/group%2Fname/x", "/api/group%2Fname/x"),  # an encoded slash inside a name stays a name
        ("/caf%C3%A9/%20x", "/caf%C3%A9/%20x"),  # other escapes are left as the client sent them
        ("/a/b%2F", "/a/b%2F"),
        ("/%61dmin/x%7E", "/admin/x~"),  # unreserved escapes decoded (RFC 3986 §6.2.2.2): routed as nginx does
        ("/a/b;v=1/c", "/a/b;v=1/c"),  # path parameters on a name are the upstream's business
    ],
)
def test_origin_form_paths_are_normalized(target: str, path: str) -> None:
    assert split_target(target, "host") == (path, "host", None)


@pytest.mark.parametrize(
    "target",
    ["/..", "/../x", "/a/../../x", "/%2e%2e/x", "/a/..%2f..%2fx", "/a/..%5cx", "/a/x%2f..", "/.%2e/x",
     "/api\\..\\admin", "/admin/x\\..\\..\\y", "/admin/..;/x", "/a/.;x/b"],
)
def test_climbing_above_the_root_or_hiding_a_dot_segment_is_refused(target: str) -> None:
    with pytest.raises(ValueError):
        split_target(target, "host")


def test_absolute_form_takes_its_host_from_the_target() -> None:
    """RFC 9112 §3.2.2: the authority of an absolute-form target replaces the Host header."""
    assert split_target("https://Example.COM:8443/a/../b?q", "other") == ("/b", "example.com", "example.com:8443")
    assert split_target("http://example.com", "other") == ("/", "example.com", "example.com")
    assert split_target("https://[::1]:8443/x", "other") == ("/x", "[::1]", "[::1]:8443")  # as Host writes it
    assert split_target("http://my_host./x", "other") == ("/x", "my_host.", "my_host.")  # names as Host carries
    for bad in ("https:///nohost", "https://user:pw@example.com/", "https://a:b:c/x", "https://h:99999999/",
                "https://localhost:+1/", "https://[fe80::1%25eth0]/", "https://loc%61lhost/", "/x#/../y"):
        with pytest.raises(ValueError):
            split_target(bad, "other")


def test_asterisk_and_authority_forms_pass_unchanged() -> None:
    assert split_target("*", "h") == ("*", "h", None)
    assert split_target("example.com:443", "h") == ("example.com:443", "h", None)


@pytest.mark.parametrize(("value", "name"), [(b"Example.COM:8443", "example.com"), (b"[::1]:443", "[::1]"),
                                             (b"a_b.internal", "a_b.internal"), (b"", ""), (b"10.0.0.1", "10.0.0.1")])
def test_host_names_as_routes_match_them(value: bytes, name: str) -> None:
    assert host_name(value) == name
    assert host_name(value) == name  # again, as remembered


@pytest.mark.parametrize("value", [b"a b", b"a/b", b"a\\b", b"h\xffst", b"a@b", b"host:80:80", b"[::1"])
def test_a_host_header_that_is_no_host_is_refused(value: bytes) -> None:
    """RFC 9112 §3.2: a Host field with an invalid value is a 400 (nginx refuses these too)."""
    for _ in range(2):  # each time: an invalid value is not remembered
        with pytest.raises(ValueError, match="Host header"):
            host_name(value)
