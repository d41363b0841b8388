"""mime's address check (the fast dot-atom path accepts nothing the full header parser refuses)
and its RFC 2047 headers (the email package reads back exactly what was written)."""

from __future__ import annotations

from email.header import decode_header, make_header
from email.headerregistry import Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from izin.channels.mime import _DOT_ATOM_ADDRESS, BadAddress, _check_address, _header


def parser_accepts(addr_spec: str) -> bool:
    try:
        address = Address(addr_spec=addr_spec)
    except Exception:
        return False
    return bool(address.username and address.domain)


@settings(max_examples=500)
@given(st.from_regex(_DOT_ATOM_ADDRESS, fullmatch=True))
def test_every_dot_atom_address_is_one_the_header_parser_accepts(addr_spec):
    assert parser_accepts(addr_spec)
    assert _check_address(addr_spec, "To") == addr_spec


@settings(max_examples=500)
@given(st.text(alphabet=st.sampled_from('ab.@-_+"() <>,;:\\[]\r\n\tş'), max_size=24))
def test_the_fast_path_never_accepts_what_the_parser_refuses(text):
    if _DOT_ATOM_ADDRESS.fullmatch(text):
        assert parser_accepts(text)


@pytest.mark.parametrize("addr_spec", ["ayse at example", "ayse@", "@example.com", "ayse@example.com\n",
                                       "ayse@example.com>, evil@example.com", "a..b@example.com"])
def test_what_is_not_an_address_is_refused_naming_the_header(addr_spec):
    with pytest.raises(BadAddress) as caught:
        _check_address(addr_spec, "To")
    assert caught.value.header == "To"


@pytest.mark.parametrize("addr_spec", ["ayse.yilmaz+kampanya@example.com.tr", "o'brien@example.com",
                                       '"ayse yilmaz"@example.com'])
def test_addresses_pass_on_either_path(addr_spec):
    assert _check_address(addr_spec, "To") == addr_spec


def unfolded(header_line: str) -> str:
    name, _, value = header_line.partition(":")
    return str(make_header(decode_header(value.replace("\r\n ", " "))))


@settings(max_examples=500)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=200),
       st.sampled_from(["Subject", "X-Kampanya-Aciklamasi-Uzun", "X", "X-" + "Uzun-Bir-Baslik-Adi-" * 3 + "Son"]))
def test_non_ascii_headers_read_back_exactly_and_fold_within_76(value, name):
    if value.isascii():
        value += "ş"
    line = _header(name, value, utf8=False)
    assert line.isascii()
    assert unfolded(line) == value
    assert all(len(physical) <= 76 for physical in line.split("\r\n"))


def test_a_turkish_subject_is_one_readable_word():
    assert _header("Subject", "İyi ki doğdun Ayşe!", utf8=False) == \
        "Subject: =?utf-8?q?=C4=B0yi_ki_do=C4=9Fdun_Ay=C5=9Fe!?="
