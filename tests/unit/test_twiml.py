"""Script templates: placeholders, escaping into TwiML, validation."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twilio.twiml.voice_response import VoiceResponse

from dialer.errors import TemplateError
from dialer.models import CallScript, ClaimedCall, Contact
from dialer.twiml import (
    DEFAULT_MESSAGE,
    INLINE_TWIML_LIMIT,
    CallRequests,
    field_key,
    fits_inline,
    render_script,
    render_twiml,
    validate_template,
)


def _contact(**overrides: Any) -> Contact:
    fields: dict[str, Any] = {
        "first_name": "Ana",
        "last_name": "García",
        "phone_number": "+34911234567",
        "email": "ana@example.com",
        "custom_fields": {"plan": "Oro", "balance": 42},
    }
    fields.update(overrides)
    return Contact(**fields)


def _say_texts(twiml: str) -> list[str]:
    root = ET.fromstring(twiml)
    assert root.tag == "Response"
    assert root.find(".//Dial") is None
    says = root.findall("Say")
    assert len(list(root)) == len(says)
    return [s.text or "" for s in says]


def test_placeholders_are_filled_from_contact_fields_and_custom_fields() -> None:
    """Every standard field and custom.KEY is substituted, whitespace in braces allowed."""
    text = render_script(
        "Hola {{first_name}} {{ last_name }}, {{phone_number}} {{email}}: plan {{custom.plan}}, {{ custom.balance }}.",
        _contact(),
    )
    assert text == "Hola Ana García, +34911234567 ana@example.com: plan Oro, 42."


def test_missing_values_render_as_empty_text() -> None:
    """A None field or an absent custom key becomes an empty string, not 'None'."""
    text = render_script("[{{first_name}}][{{custom.nope}}]", _contact(first_name=None))
    assert text == "[][]"


def test_empty_template_speaks_the_default_message() -> None:
    """None or blank templates fall back to DEFAULT_MESSAGE."""
    assert render_script(None, _contact()) == DEFAULT_MESSAGE
    assert _say_texts(render_twiml("  ", _contact(), voice="alice", language="en-US")) == [DEFAULT_MESSAGE]


def test_hostile_contact_values_come_out_as_text_never_twiml() -> None:
    """<, &, quotes and TwiML-looking text in a name stay one Say's text."""
    evil = "<Dial>+1555</Dial> & \"quotes\" 'single'"
    twiml = render_twiml("Hello {{first_name}}!", _contact(first_name=evil), voice="alice", language="es-ES")
    assert _say_texts(twiml) == [f"Hello {evil}!"]
    say = ET.fromstring(twiml).find("Say")
    assert say is not None
    assert say.get("voice") == "alice"
    assert say.get("language") == "es-ES"


def test_twiml_looking_template_is_spoken_as_text() -> None:
    """A template that itself contains TwiML markup is escaped, not interpreted."""
    template = "</Say><Dial>+15550001111</Dial><Say>"
    assert _say_texts(render_twiml(template, _contact(), voice="alice", language="en-US")) == [template]


def test_xml_invalid_control_characters_are_dropped() -> None:
    """Characters XML 1.0 cannot carry are removed so the document always parses."""
    twiml = render_twiml(
        "a{{first_name}}b", _contact(first_name="\x00\x07x"), voice="alice", language="en-US"
    )
    assert _say_texts(twiml) == ["axb"]


def test_unknown_placeholders_are_all_named() -> None:
    """validate_template names every unknown placeholder in one error."""
    with pytest.raises(TemplateError) as caught:
        validate_template("Hi {{nombre}} and {{ custom. }} {{first_name}} {{phone}}")
    message = str(caught.value)
    assert "nombre" in message
    assert "{{phone}}" in message
    assert "custom." in message
    assert "first_name" not in message


@pytest.mark.parametrize("template", ["Hi {{first_name", "Hi {{first_name}} {{", "Hi first_name}}", "{{}}"])
def test_malformed_braces_are_rejected(template: str) -> None:
    """Unclosed or stray double braces and empty placeholders raise TemplateError."""
    with pytest.raises(TemplateError):
        validate_template(template)


def test_render_refuses_an_invalid_template() -> None:
    """render_script raises rather than speaking a half-filled script."""
    with pytest.raises(TemplateError):
        render_script("Hi {{firstname}}", _contact())


def test_single_braces_are_plain_text() -> None:
    """Single braces are not placeholders and pass through unchanged."""
    validate_template("Price {5} {a}")
    assert render_script("Price {5}", _contact()) == "Price {5}"


def test_inline_limit() -> None:
    """fits_inline accepts up to INLINE_TWIML_LIMIT characters and no more."""
    assert INLINE_TWIML_LIMIT == 4000
    assert fits_inline("x" * 4000)
    assert not fits_inline("x" * 4001)


def _claimed(script: str | None, *, record: bool = False) -> ClaimedCall:
    return ClaimedCall(
        id=uuid.UUID(int=7),
        campaign_id=uuid.uuid4(),
        contact_id=uuid.uuid4(),
        retry_count=0,
        contact=_contact(),
        from_number="+34910000000",
        script_template=script,
        machine_detection=True,
        record_calls=record,
        ring_timeout_seconds=25,
        time_limit_seconds=300,
    )


def _requests(known: dict[uuid.UUID, tuple[str | None, Contact]] | None = None) -> CallRequests:
    async def lookup(call_id: uuid.UUID) -> CallScript | None:
        found = (known or {}).get(call_id)
        if found is None:
            return None
        return CallScript(contact=found[1], from_number="+34910000000", script_template=found[0])

    return CallRequests(public_url="https://dialer.example.com", voice="alice", language="es-ES", lookup=lookup)


def test_request_carries_the_document_inline_and_the_callback_urls() -> None:
    """A short script goes inline; callbacks name the call; the campaign's knobs pass through."""
    request = _requests().build(_claimed("Hola {{first_name}}"))
    call_id = uuid.UUID(int=7)
    assert request.twiml is not None and request.twiml_url is None
    assert _say_texts(request.twiml) == ["Hola Ana"]
    assert request.status_callback_url == f"https://dialer.example.com/twilio/status?call_id={call_id}"
    assert (request.to, request.from_, request.timeout_seconds, request.time_limit_seconds) == (
        "+34911234567",
        "+34910000000",
        25,
        300,
    )
    assert request.machine_detection
    assert (request.record, request.recording_callback_url) == (False, None)


def test_a_long_script_is_fetched_from_the_twiml_url_and_recording_is_called_back() -> None:
    """Past the inline limit the carrier fetches the document; recording adds its callback."""
    request = _requests().build(_claimed("x" * (INLINE_TWIML_LIMIT + 1), record=True))
    call_id = uuid.UUID(int=7)
    assert request.twiml is None
    assert request.twiml_url == f"https://dialer.example.com/twilio/twiml?call_id={call_id}"
    assert request.recording_callback_url == f"https://dialer.example.com/twilio/recording?call_id={call_id}"


async def test_the_served_document_is_the_calls_script_or_none() -> None:
    """document() renders the looked-up script for that contact; an unknown call gives None."""
    call_id = uuid.uuid4()
    requests = _requests({call_id: ("Adiós {{last_name}}", _contact())})
    document = await requests.document(call_id)
    assert document is not None
    assert _say_texts(document) == ["Adiós García"]
    assert await requests.document(uuid.uuid4()) is None


def test_field_key_is_the_import_header_normalisation() -> None:
    """Case, accents, surrounding space and runs of spaces, hyphens and underscores do
    not make two keys different; the importer's header normalisation is the same function."""
    from dialer.importer import normalise_header

    assert field_key("  Fecha-Cita ") == field_key("fecha_cita") == field_key("FECHA  CITA") == "fecha_cita"
    assert field_key("Teléfono") == field_key("TELEFONO") == "telefono"
    assert normalise_header("  Fecha - Cita") == field_key("Fecha - Cita")


def test_custom_placeholders_match_keys_whatever_their_case() -> None:
    """{{custom.Cita}} reads a key stored as 'cita' (the import's normalised header) or
    as 'CITA' (written by hand); campaign fields win over the contact's custom fields."""
    contact = _contact(custom_fields={"cita": "old", "Clínica": "Centro"}, fields={"CITA": "new"})
    assert render_script("{{custom.Cita}} {{custom.clinica}} {{ custom.Fecha cita }}", contact) == "new Centro "
    validate_template("{{custom.Cita}} {{custom.clínica}} {{custom.Fecha cita}}")


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(),
    voice=st.sampled_from(["Polly.Lucia", "alice", 'a"b&<c>', "@@dialer-say-text@@"]),
    language=st.sampled_from(["es-ES", "en-US", "x&y", ""]),
)
def test_the_document_equals_twilios_builder_for_any_text(text: str, voice: str, language: str) -> None:
    """render_twiml builds its frame once per voice and language and puts the escaped
    text in it: the document is byte for byte what VoiceResponse builds for the same
    text, whatever the text (markup, entities, quotes, any Unicode), and with a voice
    that contains the frame's own mark too (then it is built whole)."""
    contact = _contact(first_name=text)
    spoken = render_script("{{first_name}}", contact)
    expected = VoiceResponse()
    expected.say(spoken if spoken.strip() else DEFAULT_MESSAGE, voice=voice, language=language)
    assert render_twiml("{{first_name}}", contact, voice=voice, language=language) == str(expected)
