"""Script templates → TwiML.

A campaign's `script_template` is plain text with placeholders (`{{first_name}}`,
`{{last_name}}`, `{{phone_number}}`, `{{email}}`, `{{custom.KEY}}`). It is spoken with
one `<Say>`; everything — template text and contact values alike — goes through
twilio's `VoiceResponse`, which XML-escapes it, so nothing in a template or a contact
row can become TwiML.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from twilio.twiml.voice_response import VoiceResponse

from dialer.errors import TemplateError
from dialer.models import Contact

# Twilio rejects an inline `Twiml` parameter longer than this; the engine then serves
# the document from its own TwiML URL instead.
INLINE_TWIML_LIMIT = 4000

# Spoken when a campaign has no script (None or only whitespace): a call that says
# nothing would look like a nuisance call.
DEFAULT_MESSAGE = "Hello, this is an automated call. Thank you, goodbye."

CONTACT_FIELDS = ("first_name", "last_name", "phone_number", "email")

_PLACEHOLDER = re.compile(r"\{\{([^{}]*)\}\}")
_CUSTOM = re.compile(r"custom\.([A-Za-z0-9_\-]+)")
# Characters XML 1.0 cannot carry at all; escaping does not help, so they are dropped.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def _problems(template: str) -> list[str]:
    problems: list[str] = []
    for match in _PLACEHOLDER.finditer(template):
        name = match.group(1).strip()
        if name not in CONTACT_FIELDS and not _CUSTOM.fullmatch(name):
            problems.append(f"unknown placeholder {match.group(0)!r}")
    rest = _PLACEHOLDER.sub("", template)
    if "{{" in rest:
        at = rest.index("{{")
        problems.append(f"unclosed '{{{{' near {rest[at : at + 20]!r}")
    elif "}}" in rest:
        problems.append("'}}' without a matching '{{'")
    return problems


def validate_template(template: str) -> None:
    """Raise TemplateError naming every unknown or malformed placeholder in `template`.

    Called when a campaign is validated, so a bad script stops the campaign before
    any call rather than failing contact by contact."""
    problems = _problems(template)
    if problems:
        raise TemplateError("script_template: " + "; ".join(problems))


def _text(value: Any) -> str:
    # None (a missing field or custom key) renders as nothing: the script reads on.
    return "" if value is None else str(value)


def _value(name: str, contact: Contact, custom: Mapping[str, Any]) -> str:
    if name in CONTACT_FIELDS:
        return _text(getattr(contact, name))
    key = name.removeprefix("custom.")
    return _text(custom.get(key))


def render_script(template: str | None, contact: Contact) -> str:
    """The text to speak: placeholders filled from `contact`.

    A missing custom key or a None field renders as an empty string. A None or blank
    template gives DEFAULT_MESSAGE. Raises TemplateError like validate_template."""
    if template is None or not template.strip():
        return DEFAULT_MESSAGE
    validate_template(template)
    custom = contact.custom_fields or {}
    text = _PLACEHOLDER.sub(lambda m: _value(m.group(1).strip(), contact, custom), template)
    return _XML_INVALID.sub("", text)


def render_twiml(template: str | None, contact: Contact, *, voice: str, language: str) -> str:
    """A complete TwiML document that says the rendered script once.

    The text is always spoken as text: TwiML-looking content in the template or in
    a contact value comes out XML-escaped inside the single `<Say>`."""
    text = render_script(template, contact)
    if not text.strip():
        text = DEFAULT_MESSAGE
    response = VoiceResponse()
    response.say(text, voice=voice, language=language)
    return str(response)


def fits_inline(twiml: str) -> bool:
    """Whether `twiml` can be sent as the inline `Twiml` parameter of a call."""
    return len(twiml) <= INLINE_TWIML_LIMIT
