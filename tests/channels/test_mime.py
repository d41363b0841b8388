"""mime's address check: the fast dot-atom path accepts nothing the full header parser refuses."""

from __future__ import annotations

from email.headerregistry import Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from izin.channels.mime import _DOT_ATOM_ADDRESS, BadAddress, _check_address


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
