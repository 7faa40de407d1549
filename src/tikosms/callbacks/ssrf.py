"""Callback URLs: what the API accepts, and which hosts the gateway refuses to call.

A callback URL is chosen by a customer, and the gateway POSTs to it from inside the operator's
network. Left unchecked, `http://169.254.169.254/...` or `http://10.0.0.5:5432/` would make the
gateway a proxy into that network (server-side request forgery). Two checks, at two moments:

- `validate_callback_url` (pure) when a send request is accepted: an absolute http(s) URL of at
  most 2,048 characters with a host and no credentials, else the API answers 422.
- `check_callback_host` (async, resolves DNS) before a callback is sent: every address the host
  resolves to must be public. Names are resolved at delivery time, not at acceptance, because
  DNS answers change. The HTTP sender repeats the address check inside its connector, on the
  very addresses it connects to, which closes the gap a rebinding DNS server would exploit
  between this check and the connection.

Exceptions (all `CallbackUrlError`):

- `InvalidCallbackUrl`: not a usable URL. Permanent; the API answers its 422 `Invalid callback
  URL provided` (code `invalid_callback_url`, `tikosms.errors.InvalidCallbackUrl`).
- `CallbackUrlRefused`: the host is or resolves to an internal address. Permanent: give up.
- `CallbackHostUnresolved`: the name does not resolve (now). Transient: retry later.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from urllib.parse import urlsplit

MAX_CALLBACK_URL_LENGTH = 2048  # characters, the limit the API documents
RESOLVE_TIMEOUT = 5.0  # seconds for one DNS lookup before the host counts as unresolved

IPAddress = IPv4Address | IPv6Address


class CallbackUrlError(Exception):
    """Base of every callback URL problem; `reason` is one readable sentence for the logs."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidCallbackUrl(CallbackUrlError, ValueError):
    """Not an acceptable callback URL. The API answers `tikosms.errors.InvalidCallbackUrl`
    (422 `Invalid callback URL provided`); `reason` says what was wrong, for the logs."""


class CallbackUrlRefused(CallbackUrlError):
    """The host is, or resolves to, an address the gateway must never call."""


class CallbackHostUnresolved(CallbackUrlError):
    """The host name does not resolve at the moment; the delivery may be retried."""


def validate_callback_url(url: str) -> str:
    """Return `url` unchanged when it is acceptable as a callback URL, else raise.

    Accepted: an absolute `http` or `https` URL of at most 2,048 characters with a host name or
    IP literal, an optional valid port, no `user:password@`, and no whitespace or control
    characters. Numeric hosts that are not dotted-quad IPv4 (`2130706433`, `127.1`, `0x7f.1`) are
    refused: resolvers read them as IPv4 addresses in disguise.
    """
    if not isinstance(url, str) or not url:
        raise InvalidCallbackUrl("callback URL is empty")
    if len(url) > MAX_CALLBACK_URL_LENGTH:
        raise InvalidCallbackUrl(
            f"callback URL is longer than {MAX_CALLBACK_URL_LENGTH} characters"
        )
    if _FORBIDDEN_CHARACTER.search(url):
        raise InvalidCallbackUrl("callback URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # parses the port: raises ValueError when it is not 0-65535
    except ValueError as exc:
        raise InvalidCallbackUrl(f"callback URL cannot be parsed: {exc}") from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidCallbackUrl("callback URL must start with http:// or https://")
    if "@" in parts.netloc:
        raise InvalidCallbackUrl("callback URL may not carry a user name or password")
    if port == 0:
        raise InvalidCallbackUrl("callback URL has port 0")
    host = parts.hostname
    if not host:
        raise InvalidCallbackUrl("callback URL has no host")
    if parts.netloc.startswith("[") or ":" in host:
        _check_ipv6_literal(host)
    else:
        _check_host_name(host)
    return url


async def check_callback_host(url: str, allow_private: bool) -> None:
    """Raise `CallbackUrlRefused` unless every address of the URL's host is public.

    `allow_private` (development and tests only) skips the address check; the URL is still
    validated. A name that does not resolve raises `CallbackHostUnresolved`.
    """
    validate_callback_url(url)
    if allow_private:
        return
    host = _host_of(url)
    literal = _ip_literal(host)
    if literal is not None:
        _refuse_if_internal(literal, host)
        return
    for address in await _resolve(host, urlsplit(url).port):
        _refuse_if_internal(address, host)


def refusal_reason(address: IPAddress | str) -> str | None:
    """Why the gateway must not connect to `address`, or None when it is a public address.

    IPv6 forms that embed an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::/96`,
    6to4 `2002::/16`) are judged by the IPv4 address inside. Only global unicast IPv6
    (`2000::/3`) can be public at all.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            reason = refusal_reason(embedded)
            return None if reason is None else f"{ip} embeds an IPv4 address: {reason}"
        return _first_match(ip, _IPV6_REFUSED) or (
            None if ip in _IPV6_GLOBAL_UNICAST else f"{ip} is not a global unicast address"
        )
    reason = _first_match(ip, _IPV4_REFUSED)
    if reason is None and not ip.is_global:
        # A catch-all for ranges registered after this table was written.
        reason = f"{ip} is not a globally routable address"
    return reason


def _refuse_if_internal(address: IPAddress, host: str) -> None:
    reason = refusal_reason(address)
    if reason is not None:
        target = "" if host == str(address) else f"{host} resolves to an internal address: "
        raise CallbackUrlRefused(f"callback refused: {target}{reason}")


async def _resolve(host: str, port: int | None) -> list[IPAddress]:
    """Every address `host` resolves to, through the event loop's getaddrinfo."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            infos = await loop.getaddrinfo(
                host, port or 0, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
            )
    except TimeoutError as exc:
        raise CallbackHostUnresolved(f"DNS lookup of {host} timed out") from exc
    except OSError as exc:  # socket.gaierror and friends
        raise CallbackHostUnresolved(f"cannot resolve {host}: {exc}") from exc
    addresses: list[IPAddress] = []
    for family, _type, _proto, _canonname, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        # An IPv6 link-local answer may carry a zone ("fe80::1%eth0"): the zone is not part of
        # the address.
        text = str(sockaddr[0]).split("%", 1)[0]
        addresses.append(ipaddress.ip_address(text))
    if not addresses:
        raise CallbackHostUnresolved(f"{host} has no IPv4 or IPv6 address")
    return addresses


def _host_of(url: str) -> str:
    host = urlsplit(url).hostname
    assert host is not None  # validate_callback_url has checked
    return host


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _embedded_ipv4(ip: IPv6Address) -> IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64_WELL_KNOWN:
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def _first_match(
    ip: IPAddress, table: tuple[tuple[IPv4Network | IPv6Network, str], ...]
) -> str | None:
    for network, description in table:
        if ip in network:
            return f"{ip} is {description} ({network})"
    return None


def _check_ipv6_literal(host: str) -> None:
    # The zone of a link-local literal (`[fe80::1%25eth0]`) is never a valid callback target.
    if "%" in host:
        raise InvalidCallbackUrl(f"callback URL has a zoned IPv6 host {host!r}")
    try:
        IPv6Address(host)
    except ValueError as exc:
        raise InvalidCallbackUrl(f"callback URL has an invalid IPv6 host {host!r}") from exc


def _check_host_name(host: str) -> None:
    try:
        ascii_host = host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise InvalidCallbackUrl(f"callback URL has an invalid host {host!r}") from exc
    name = ascii_host.removesuffix(".")  # a fully qualified name may end with the root's dot
    if not name or len(name) > 253:
        raise InvalidCallbackUrl(f"callback URL has an invalid host {host!r}")
    labels = name.split(".")
    if not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise InvalidCallbackUrl(f"callback URL has an invalid host {host!r}")
    if _NUMERIC_LABEL.fullmatch(labels[-1]) and not _is_dotted_quad(name):
        raise InvalidCallbackUrl(f"callback URL has an ambiguous numeric host {host!r}")


def _is_dotted_quad(name: str) -> bool:
    try:
        IPv4Address(name)  # strict: four decimal octets, no leading zeros
    except ValueError:
        return False
    return True


_FORBIDDEN_CHARACTER = re.compile(r"[\x00-\x20\x7f-\x9f\s]")
_HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
# A last label that is all digits, or hexadecimal with 0x, reads as (part of) an IPv4 address
# to inet_aton and to the WHATWG URL parser.
_NUMERIC_LABEL = re.compile(r"(?:0[xX][0-9A-Fa-f]*|[0-9]+)")

_NAT64_WELL_KNOWN = IPv6Network("64:ff9b::/96")
_IPV6_GLOBAL_UNICAST = IPv6Network("2000::/3")

# Networks from the IANA special-purpose registries that no callback may reach.
# Order matters only for the wording: the first match names the reason.
_IPV4_REFUSED: tuple[tuple[IPv4Network, str], ...] = tuple(
    (IPv4Network(network), description)
    for network, description in (
        ("0.0.0.0/32", "the unspecified address"),
        ("0.0.0.0/8", "in 'this network'"),
        ("127.0.0.0/8", "a loopback address"),
        ("10.0.0.0/8", "a private address"),
        ("172.16.0.0/12", "a private address"),
        ("192.168.0.0/16", "a private address"),
        ("100.64.0.0/10", "a carrier-grade NAT (shared) address"),
        ("169.254.0.0/16", "a link-local address"),
        ("192.0.0.0/24", "an IETF protocol assignment"),
        ("192.0.2.0/24", "a documentation address"),
        ("198.51.100.0/24", "a documentation address"),
        ("203.0.113.0/24", "a documentation address"),
        ("192.88.99.0/24", "a 6to4 relay anycast address"),
        ("198.18.0.0/15", "a benchmarking address"),
        ("224.0.0.0/4", "a multicast address"),
        ("240.0.0.0/4", "a reserved address"),  # includes 255.255.255.255, the broadcast address
    )
)
_IPV6_REFUSED: tuple[tuple[IPv6Network, str], ...] = tuple(
    (IPv6Network(network), description)
    for network, description in (
        ("::/128", "the unspecified address"),
        ("::1/128", "a loopback address"),
        ("::/96", "an IPv4-compatible address (deprecated)"),
        ("64:ff9b:1::/48", "a local-use NAT64 address"),
        ("100::/64", "a discard-only address"),
        ("2001::/23", "an IETF protocol assignment"),  # Teredo, ORCHID, benchmarking...
        ("2001:db8::/32", "a documentation address"),
        ("3fff::/20", "a documentation address"),
        ("5f00::/16", "a segment-routing address"),
        ("fc00::/7", "a unique-local (private) address"),
        ("fe80::/10", "a link-local address"),
        ("fec0::/10", "a site-local address (deprecated)"),
        ("ff00::/8", "a multicast address"),
    )
)
