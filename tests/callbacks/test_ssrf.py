import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tikosms.callbacks.ssrf import (
    MAX_CALLBACK_URL_LENGTH,
    CallbackHostUnresolved,
    CallbackUrlError,
    CallbackUrlRefused,
    InvalidCallbackUrl,
    check_callback_host,
    refusal_reason,
    validate_callback_url,
)

PUBLIC_IPV4 = "93.184.216.34"
PUBLIC_IPV6 = "2606:2800:220:1:248:1893:25c8:1946"


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/tikosms",  # the usual
        "http://hooks.example.com",  # no path
        "HTTPS://Hooks.Example.com/x",  # scheme and host are case-insensitive
        "https://hooks.example.com:8443/a/b?account=7&x=%20y#frag",  # port, query, fragment
        "https://hooks.example.com./x",  # fully qualified name with the root's dot
        "https://my_hooks.example.com/",  # underscores occur in real names
        "http://93.184.216.34/cb",  # IPv4 literal
        "http://[2606:2800:220:1:248:1893:25c8:1946]:8080/cb",  # IPv6 literal
        "https://bücher.example/hook",  # internationalised name
        "http://localhost:8000/cb",  # valid as a URL; refused later when calling
        "https://a.example/" + "x" * (MAX_CALLBACK_URL_LENGTH - len("https://a.example/")),
    ],
)
def test_validate_accepts(url: str) -> None:
    assert validate_callback_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "",  # empty
        "hooks.example.com/cb",  # not absolute
        "/cb",  # a path only
        "ftp://hooks.example.com/cb",  # another scheme
        "javascript:alert(1)",  # not a network URL at all
        "file:///etc/passwd",  # local file
        "https:///cb",  # no host
        "https://user:secret@hooks.example.com/cb",  # credentials
        "https://user@hooks.example.com/cb",  # user name alone
        "https://hooks.example.com:99999/cb",  # port out of range
        "https://hooks.example.com:0/cb",  # port 0
        "https://hooks.example.com:http/cb",  # port not numeric
        "https://hooks example.com/cb",  # space in the host
        "https://hooks.example.com/c b",  # space in the path
        "https://hooks.example.com/cb\r\nX-Injected: 1",  # header injection attempt
        "https://hooks.example.com/\x00",  # control character
        "https://[::1/cb",  # unclosed IPv6 bracket
        "https://[not-ipv6]/cb",  # brackets around something else
        "https://[fe80::1%25eth0]/cb",  # zoned IPv6 literal
        "https://hooks..example.com/cb",  # empty label
        "https://-hooks.example.com/cb",  # label starting with a dash
        "https://" + "a" * 64 + ".example.com/cb",  # label longer than 63
        "http://2130706433/cb",  # 127.0.0.1 as one decimal number
        "http://127.1/cb",  # short IPv4 form
        "http://0x7f.0.0.1/cb",  # hexadecimal octet
        "http://0177.0.0.1/cb",  # octal octet
        "http://example.0x7f/cb",  # a hexadecimal last label
        "https://a.example/" + "x" * (MAX_CALLBACK_URL_LENGTH + 1 - len("https://a.example/")),
    ],
)
def test_validate_refuses(url: str) -> None:
    with pytest.raises(InvalidCallbackUrl):
        validate_callback_url(url)


def test_invalid_url_is_a_value_error_with_a_reason() -> None:
    with pytest.raises(ValueError) as caught:
        validate_callback_url("ftp://x.example/")
    assert isinstance(caught.value, CallbackUrlError)
    assert "http" in caught.value.reason


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),  # the whole 127/8
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "this network"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),  # the end of 172.16/12
        ("192.168.1.1", "private"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("100.127.255.254", "carrier-grade NAT"),  # the end of 100.64/10
        ("169.254.169.254", "link-local"),  # cloud metadata service
        ("192.0.0.8", "IETF"),
        ("192.0.2.1", "documentation"),
        ("198.18.0.1", "benchmarking"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),  # SSDP
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),  # broadcast
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:10.0.0.1", "private"),  # IPv4-mapped
        ("::ffff:169.254.169.254", "link-local"),  # IPv4-mapped metadata service
        ("::127.0.0.1", "IPv4-compatible"),  # deprecated IPv4-compatible form
        ("64:ff9b::7f00:1", "loopback"),  # NAT64 of 127.0.0.1
        ("64:ff9b:1::1", "NAT64"),  # local-use NAT64
        ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
        ("2002:a00:1::1", "private"),  # 6to4 of 10.0.0.1
        ("2001::1", "IETF"),  # Teredo
        ("2001:db8::1", "documentation"),
        ("fc00::1", "unique-local"),
        ("fd12:3456::1", "unique-local"),
        ("fe80::1", "link-local"),
        ("fec0::1", "site-local"),
        ("ff02::1", "multicast"),
        ("100::1", "discard"),
        ("4000::1", "not a global unicast"),  # outside 2000::/3
    ],
)
def test_refusal_reason_names_internal_addresses(address: str, words: str) -> None:
    reason = refusal_reason(address)
    assert reason is not None
    assert words in reason


@pytest.mark.parametrize(
    "address",
    [
        PUBLIC_IPV4,
        "8.8.8.8",
        "1.1.1.1",
        "100.63.255.255",  # just below 100.64/10
        "100.128.0.0",  # just above it
        "172.32.0.1",  # just above 172.16/12
        PUBLIC_IPV6,
        "::ffff:93.184.216.34",  # IPv4-mapped public
        "64:ff9b::5db8:d822",  # NAT64 of 93.184.216.34
        "2002:5db8:d822::1",  # 6to4 of 93.184.216.34
    ],
)
def test_refusal_reason_passes_public_addresses(address: str) -> None:
    assert refusal_reason(address) is None


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8000/cb",
        "http://10.0.0.5:5432/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/cb",
        "http://[::ffff:127.0.0.1]/cb",
        "http://0.0.0.0:8080/",
        "http://100.64.1.1/cb",
    ],
)
async def test_check_refuses_internal_ip_literals(url: str) -> None:
    with pytest.raises(CallbackUrlRefused):
        await check_callback_host(url, allow_private=False)


async def test_check_refuses_a_name_that_resolves_to_loopback() -> None:
    with pytest.raises(CallbackUrlRefused) as caught:
        await check_callback_host("http://localhost:8000/cb", allow_private=False)
    assert "localhost" in caught.value.reason
    assert "loopback" in caught.value.reason


@pytest.mark.parametrize("url", [f"http://{PUBLIC_IPV4}/cb", f"https://[{PUBLIC_IPV6}]:8443/cb"])
async def test_check_passes_public_ip_literals(url: str) -> None:
    await check_callback_host(url, allow_private=False)


async def test_check_allows_private_hosts_when_told() -> None:
    await check_callback_host("http://localhost:8000/cb", allow_private=True)
    await check_callback_host("http://10.0.0.5/cb", allow_private=True)


async def test_check_still_validates_the_url_when_private_hosts_are_allowed() -> None:
    with pytest.raises(InvalidCallbackUrl):
        await check_callback_host("ftp://localhost/cb", allow_private=True)


def fake_getaddrinfo(*answers: str) -> Callable[..., Awaitable[list[tuple[Any, ...]]]]:
    """A getaddrinfo that answers `answers` for any name, as a DNS server could."""

    async def getaddrinfo(host: str, port: int, **kwargs: object) -> list[tuple[Any, ...]]:
        return [
            (
                socket.AF_INET6 if ":" in address else socket.AF_INET,
                socket.SOCK_STREAM,
                socket.IPPROTO_TCP,
                "",
                (address, port, 0, 0) if ":" in address else (address, port),
            )
            for address in answers
        ]

    return getaddrinfo


async def test_check_refuses_when_any_one_resolved_address_is_internal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A public address first and a private one after: every address is checked.
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "getaddrinfo", fake_getaddrinfo(PUBLIC_IPV4, "10.0.0.7"))
    with pytest.raises(CallbackUrlRefused) as caught:
        await check_callback_host("https://hooks.example.com/cb", allow_private=False)
    assert "10.0.0.7" in caught.value.reason


async def test_check_passes_a_name_with_only_public_addresses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "getaddrinfo", fake_getaddrinfo(PUBLIC_IPV4, PUBLIC_IPV6))
    await check_callback_host("https://hooks.example.com/cb", allow_private=False)


async def test_check_refuses_a_zoned_link_local_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "getaddrinfo", fake_getaddrinfo("fe80::1%eth0"))
    with pytest.raises(CallbackUrlRefused):
        await check_callback_host("https://hooks.example.com/cb", allow_private=False)


async def test_check_reports_an_unresolvable_name_as_retryable() -> None:
    # `.invalid` is reserved (RFC 2606): it never resolves, with or without a network.
    with pytest.raises(CallbackHostUnresolved):
        await check_callback_host("https://hooks.invalid/cb", allow_private=False)
