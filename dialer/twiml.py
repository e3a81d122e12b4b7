"""Script templates → TwiML, and the carrier request that carries it.

A campaign's `script_template` is plain text with placeholders (`{{first_name}}`,
`{{last_name}}`, `{{phone_number}}`, `{{email}}`, `{{custom.KEY}}`). `custom.KEY`
reads the contact's fields in this campaign (`campaign_contacts.fields`) first, then
its own `custom_fields`; keys are compared after `field_key`, the normalisation the
CSV import gives its headers, so `{{custom.Cita}}` finds a column headed "CITA". It is spoken with
one `<Say>`; everything — template text and contact values alike — goes through
twilio's `VoiceResponse`, which XML-escapes it, so nothing in a template or a contact
row can become TwiML.

`CallRequests` turns a claimed call into its `DialRequest` (the document inline, or
the daemon's TwiML URL when too long, and the signed callback URLs) and serves the
document of a call at that URL.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from twilio.twiml.voice_response import VoiceResponse

from dialer.carrier import DialRequest
from dialer.errors import TemplateError
from dialer.models import ClaimedCall, Contact

# Twilio rejects an inline `Twiml` parameter longer than this; the engine then serves
# the document from its own TwiML URL instead.
INLINE_TWIML_LIMIT = 4000

# Spoken when a campaign has no script (None or only whitespace): a call that says
# nothing would look like a nuisance call.
DEFAULT_MESSAGE = "Hello, this is an automated call. Thank you, goodbye."

CONTACT_FIELDS = ("first_name", "last_name", "phone_number", "email")

_PLACEHOLDER = re.compile(r"\{\{([^{}]*)\}\}")
# A key: letters (any script), digits, '_', '-' and inner spaces ("custom.Fecha cita").
_CUSTOM = re.compile(r"custom\.(\w[\w\- ]*)")
# Characters XML 1.0 cannot carry at all; escaping does not help, so they are dropped.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def field_key(name: str) -> str:
    """The one normalisation of a field's name, for CSV headers and placeholder keys
    alike: accents dropped, case folded, surrounding space trimmed, runs of spaces,
    hyphens and underscores made one '_' ("  Fecha-Cita " and "fecha_cita" are the
    same key, and so are "Teléfono" and "TELEFONO")."""
    decomposed = unicodedata.normalize("NFKD", name)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return re.sub(r"[\s\-_]+", "_", bare.strip().casefold())


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


def custom_keys(template: str | None) -> list[str]:
    """The `{{custom.KEY}}` keys a template reads, as written, in order, once per
    field_key."""
    found: dict[str, str] = {}
    for match in _PLACEHOLDER.finditer(template or ""):
        custom = _CUSTOM.fullmatch(match.group(1).strip())
        if custom:
            found.setdefault(field_key(custom.group(1)), custom.group(1))
    return list(found.values())


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
    return _text(custom.get(field_key(name.removeprefix("custom."))))


def custom_values(contact: Contact) -> dict[str, Any]:
    """What `{{custom.KEY}}` can read, by field_key: the contact's own custom_fields,
    overridden by its fields in this campaign."""
    merged = {field_key(k): v for k, v in (contact.custom_fields or {}).items()}
    merged.update({field_key(k): v for k, v in (contact.fields or {}).items()})
    return merged


def render_script(template: str | None, contact: Contact) -> str:
    """The text to speak: placeholders filled from `contact`.

    A missing custom key or a None field renders as an empty string. A None or blank
    template gives DEFAULT_MESSAGE. Raises TemplateError like validate_template."""
    if template is None or not template.strip():
        return DEFAULT_MESSAGE
    validate_template(template)
    custom = custom_values(contact)
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


# The script template and contact of a call (the store's call_for_twiml), or None.
ScriptLookup = Callable[[uuid.UUID], Awaitable[tuple[str | None, Contact] | None]]


@dataclass(frozen=True)
class CallRequests:
    """What a call says and where the carrier reports on it, for one daemon.

    `public_url` is the address the carrier reaches (no trailing slash); every URL
    carries `?call_id=<uuid>`, which the callback signature covers."""

    public_url: str
    voice: str
    language: str
    lookup: ScriptLookup

    def build(self, call: ClaimedCall) -> DialRequest:
        """The carrier request for a claimed call: its TwiML inline when it fits,
        else the URL the carrier fetches it from; the recording callback only when
        the campaign records."""
        doc = render_twiml(call.script_template, call.contact, voice=self.voice, language=self.language)
        query = f"?call_id={call.id}"
        inline = fits_inline(doc)
        return DialRequest(
            to=call.contact.phone_number,
            from_=call.from_number,
            status_callback_url=f"{self.public_url}/twilio/status{query}",
            twiml=doc if inline else None,
            twiml_url=None if inline else f"{self.public_url}/twilio/twiml{query}",
            timeout_seconds=call.ring_timeout_seconds,
            time_limit_seconds=call.time_limit_seconds,
            machine_detection=call.machine_detection,
            record=call.record_calls,
            recording_callback_url=(
                f"{self.public_url}/twilio/recording{query}" if call.record_calls else None
            ),
        )

    async def document(self, call_id: uuid.UUID) -> str | None:
        """The TwiML document of a call (served at /twilio/twiml), None when unknown."""
        found = await self.lookup(call_id)
        if found is None:
            return None
        template, contact = found
        return render_twiml(template, contact, voice=self.voice, language=self.language)
