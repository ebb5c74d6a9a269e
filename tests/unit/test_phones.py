import pytest

from zapgate.domain.phones import InvalidPhoneNumber, jid_user, mask, parse_recipient, phone_jid, sanitize


@pytest.mark.parametrize(
    ("raw", "phone"),
    [
        ("5511999999999", "5511999999999"),
        ("+55 (11) 99999-9999", "5511999999999"),
        ("+55.11.9999.9999", "551199999999"),  # an eight-digit Brazilian mobile stays as written
        ("1 (650) 555-0100", "16505550100"),
        ("+44 20 7946 0958", "442079460958"),
        ("  4915112345678 ", "4915112345678"),
    ],
)
def test_phone_numbers_are_sanitised_never_rewritten(raw: str, phone: str) -> None:
    recipient = parse_recipient(raw)
    assert recipient.phone == phone and recipient.jid is None and recipient.key == phone


@pytest.mark.parametrize(
    "jid",
    [
        "5511999999999@s.whatsapp.net",
        "5511999999999:12@s.whatsapp.net",
        "123456789012345@lid",
        "120363012345678901@g.us",
    ],
)
def test_jids_are_taken_as_given(jid: str) -> None:
    recipient = parse_recipient(jid)
    assert recipient.jid == jid and recipient.phone is None
    assert recipient.is_group == jid.endswith("@g.us")


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        None,
        12345678901,
        "abc",
        "1234567",  # 7 digits
        "1234567890123456",  # 16 digits
        "55 11 9999x9999",
        "+0 123 456 789",  # no country code 0
        "99999999999",  # no country 999
        "5511999999999@example.com",
        "abc@g.us",
        "55119999@s.whatsapp.net@x",
        "٥٥١١٩٩٩٩٩٩٩٩٩",  # Arabic-Indic digits
    ],
)
def test_malformed_recipients_are_refused_with_a_reason(raw: object) -> None:
    with pytest.raises(InvalidPhoneNumber) as caught:
        parse_recipient(raw)
    assert caught.value.message.startswith(("invalid", "a recipient is required"))


def test_helpers() -> None:
    assert sanitize("+1 (650) 555-0100") == "16505550100"
    assert phone_jid("5511999999999") == "5511999999999@s.whatsapp.net"
    assert jid_user("5511999999999:7@s.whatsapp.net") == "5511999999999"
    assert mask("5511999999999") == "5511*****9999"


@pytest.mark.parametrize(
    ("phone", "masked"),
    [
        ("1234567", "1*****7"),
        ("12345678", "1******8"),
        ("123456789012", "123******012"),
        ("12345", "*****"),
        ("123", "***"),
        ("12345678@s.whatsapp.net", "1******8"),
    ],
)
def test_mask_hides_at_least_five_digits_of_any_number(phone: str, masked: str) -> None:
    assert mask(phone) == masked
    assert mask(None) is None
