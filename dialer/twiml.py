"""Script templates → TwiML, and the carrier request that carries it.

A campaign's `script_template` is plain text with placeholders (`{{first_name}}`,
`{{last_name}}`, `{{phone_number}}`, `{{email}}`, `{{custom.KEY}}`). `custom.KEY`
reads the contact's fields in this campaign (`campaign_contacts.fields`) first, then
its own `custom_fields`; keys are compared after `field_key`, the normalisation the
CSV import gives its headers, so `{{custom.Cita}}` finds a column headed "CITA". It is spoken with
one `<Say>`; everything — template text and contact values alike — is XML-escaped
as text into a document twilio's `VoiceResponse` built (once per voice and language:
`_say_frame` for the plain script, `_reading_frame` for a menu's readings), so
nothing in a template or a contact row can
become TwiML.

A campaign with a keypad menu (docs/campaigns.md#menus) reads its script inside a
`<Gather numDigits="1">` — once, then `menu_repeats` more times — whose action URL
(`/twilio/gather`, carrying the call id, which reading it is and how many keys the
call has recorded, all covered by the signature) answers each key with the next
document: the key's `say` and a hang-up, a transfer (`<Dial>`), or the script again.
Every `say` text is a template rendered and escaped like the script. A campaign that
leaves voicemail is answered by URL, so the document can depend on `AnsweredBy`.

`CallRequests` turns a claimed call into its `DialRequest` (the document inline, or
the daemon's TwiML URL when too long or decided at answer time, and the signed
callback URLs), serves the document of a call at that URL, and answers key presses.
"""

from __future__ import annotations

import functools
import re
import unicodedata
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode
from xml.sax.saxutils import escape as xml_escape

import structlog
from twilio.twiml.voice_response import VoiceResponse

from dialer.carrier import DialRequest
from dialer.errors import TemplateError
from dialer.menu import Action, Menu, MenuError, parse_menu
from dialer.models import ApplyResult, CallScript, ClaimedCall, Contact, KeyAnswer, KeyApplied, KeyPress

# Twilio rejects an inline `Twiml` parameter longer than this; the engine then serves
# the document from its own TwiML URL instead.
INLINE_TWIML_LIMIT = 4000
# Seconds a <Gather> waits for a key after the script is read (Twilio's default).
GATHER_TIMEOUT_SECONDS = 5

# Spoken when a campaign has no script (None or only whitespace): a call that says
# nothing would look like a nuisance call.
DEFAULT_MESSAGE = "Hello, this is an automated call. Thank you, goodbye."

CONTACT_FIELDS = ("first_name", "last_name", "phone_number", "email")

log = structlog.get_logger(__name__)

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
    frame = _say_frame(voice, language)
    if frame is None:
        response = VoiceResponse()
        response.say(text, voice=voice, language=language)
        return str(response)
    before, after = frame
    return before + xml_escape(text) + after


# Stands for the text in the one document built per voice and language (`_say_frame`).
_FRAME_MARK = "@@dialer-say-text@@"


@functools.lru_cache(maxsize=64)
def _say_frame(voice: str, language: str) -> tuple[str, str] | None:
    """render_twiml's document without its text, as twilio's builder writes it: built
    once per voice and language instead of once per dial (about 100 µs each: the
    profile of a call's lifecycle put 7 % of it in TwiML building). The text goes
    between the two parts escaped as the builder's ElementTree escapes text (&, <, >);
    tests/unit/test_twiml.py checks the result equals the builder's for any text.
    None when the mark itself appears in the voice or language (then each document
    is built whole)."""
    response = VoiceResponse()
    response.say(_FRAME_MARK, voice=voice, language=language)
    before, mark, after = str(response).partition(_FRAME_MARK)
    return (before, after) if mark and _FRAME_MARK not in after else None


def fits_inline(twiml: str) -> bool:
    """Whether `twiml` can be sent as the inline `Twiml` parameter of a call."""
    return len(twiml) <= INLINE_TWIML_LIMIT


@dataclass(frozen=True)
class Voice:
    """The voice and language every <Say> and <Gather> of a call uses."""

    voice: str
    language: str


def _say_text(template: str | None, contact: Contact) -> str:
    """A `say` text rendered like the script; empty for none (nothing is said)."""
    if template is None or not template.strip():
        return ""
    return render_script(template, contact)


def _say(response: VoiceResponse, text: str, speech: Voice) -> None:
    if text.strip():
        response.say(text, voice=speech.voice, language=speech.language)


def gather_url(public_url: str, call_id: uuid.UUID, *, read: int, keys: int) -> str:
    """The action URL of a reading's <Gather>: the call, which reading (0 = the first)
    and how many keys the call had recorded when this document was served."""
    return f"{public_url}/twilio/gather?" + urlencode({"call_id": str(call_id), "read": read, "keys": keys})


def _readings(
    response: VoiceResponse, script: CallScript, speech: Voice, action: Callable[[int], str], first: int
) -> None:
    """The script inside a <Gather>, for readings `first` … menu_repeats: a key works
    while it is read; no key falls through to the next reading, then to the end of
    the document (the call ends as no_response, sql/0014)."""
    text = render_script(script.script_template, script.contact)
    if not text.strip():
        text = DEFAULT_MESSAGE
    for read in range(first, script.menu_repeats + 1):
        gather = response.gather(
            num_digits=1,
            action=action(read),
            method="POST",
            timeout=GATHER_TIMEOUT_SECONDS,
            finish_on_key="",  # '#' is a menu key like any other
            language=speech.language,
        )
        gather.say(text, voice=speech.voice, language=speech.language)


def call_document(
    script: CallScript, speech: Voice, action: Callable[[int], str], *, answered_by: str | None = None
) -> str:
    """The first document of a call: the voicemail message when a machine answered a
    campaign that leaves one, else the script — said once, or read as a menu."""
    voicemail = script.leaves_voicemail and (answered_by or "").startswith("machine")
    if script.menu is not None and not voicemail:
        readings = _readings_xml(script, speech, action, 0)
        if readings:
            return _document(readings)
    return built_call_document(script, speech, action, answered_by=answered_by)


def built_call_document(
    script: CallScript, speech: Voice, action: Callable[[int], str], *, answered_by: str | None = None
) -> str:
    """call_document, every element built by twilio's VoiceResponse (the reference the
    framed documents are tested against, and their fallback)."""
    response = VoiceResponse()
    if script.leaves_voicemail and (answered_by or "").startswith("machine"):
        _say(response, _say_text(script.voicemail_template, script.contact), speech)
        response.hangup()
        return str(response)
    if script.menu is None:
        template, contact = script.script_template, script.contact
        return render_twiml(template, contact, voice=speech.voice, language=speech.language)
    _readings(response, script, speech, action, 0)
    return str(response)


def hangup_document() -> str:
    """What a key press that records nothing for a live call hears: the end."""
    response = VoiceResponse()
    response.hangup()
    return str(response)


def key_document(
    script: CallScript, menu: Menu, press: KeyPress, speech: Voice, action: Callable[[int, int], str]
) -> str:
    """The answer to a key press recorded on a call: the key's `say`, then a hang-up
    (an outcome, an opt-out), the transfer, or the script again (repeat: from the
    same reading; a key the menu lacks: the next reading, if any is left).
    `action(read, keys)` is the gather URL."""
    keys = press.keys + 1
    entry = menu.get(press.digit)
    parts: list[str] | None
    if entry is None:
        if press.read >= script.menu_repeats:
            parts = [_HANGUP]
        else:
            parts = _readings_xml(script, speech, lambda read: action(read, keys), press.read + 1)
    elif entry.action is Action.TRANSFER:
        parts = None  # rare: built whole
    else:
        said = _say_xml(_say_text(entry.say, script.contact), speech)
        if entry.action is Action.REPEAT:
            readings = _readings_xml(script, speech, lambda read: action(read, keys), press.read)
        else:
            readings = [_HANGUP]
        parts = None if said is None or readings is None else said + readings
    if parts:
        return _document(parts)
    return built_key_document(script, menu, press, speech, action)


def built_key_document(
    script: CallScript, menu: Menu, press: KeyPress, speech: Voice, action: Callable[[int, int], str]
) -> str:
    """key_document, every element built by twilio's VoiceResponse (the reference and
    the fallback, as built_call_document)."""
    response = VoiceResponse()
    keys = press.keys + 1
    entry = menu.get(press.digit)
    if entry is None:
        if press.read >= script.menu_repeats:
            response.hangup()
        else:
            _readings(response, script, speech, lambda read: action(read, keys), press.read + 1)
        return str(response)
    _say(response, _say_text(entry.say, script.contact), speech)
    if entry.action is Action.REPEAT:
        _readings(response, script, speech, lambda read: action(read, keys), press.read)
    elif entry.action is Action.TRANSFER:
        assert entry.to is not None  # parse_menu requires it
        response.dial(entry.to, caller_id=script.from_number)
    else:
        response.hangup()
    return str(response)


# -- menu documents from frames ---------------------------------------------------------
#
# A menu document is a <Response> of verbs; each verb is written from a frame that
# twilio's builder made once per voice and language, with the escaped text (and
# action URL) put in it, as `_say_frame` does for the plain script: building the
# tree per key press cost 80-270 us. tests/unit/test_twiml_menu.py checks every
# document equals the builder's (built_call_document, built_key_document) for any
# text, voice, language and URL.

_DOCUMENT_HEAD = '<?xml version="1.0" encoding="UTF-8"?><Response>'
_DOCUMENT_TAIL = "</Response>"
_HANGUP = "<Hangup />"
# Stands for the action URL in the reading frame; nothing in it is escaped in XML.
_ACTION_MARK = "@@dialer-gather-action@@"


def _document(verbs: list[str]) -> str:
    return _DOCUMENT_HEAD + "".join(verbs) + _DOCUMENT_TAIL


def _escape_attr(value: str) -> str:
    """An attribute value escaped as the builder's ElementTree escapes it."""
    return xml_escape(value, {'"': "&quot;", "\r": "&#13;", "\n": "&#10;", "\t": "&#09;"})


def _verbs_of(document: str) -> str | None:
    """The verbs of a builder's document, without the declaration and <Response>."""
    if document.startswith(_DOCUMENT_HEAD) and document.endswith(_DOCUMENT_TAIL):
        return document[len(_DOCUMENT_HEAD) : -len(_DOCUMENT_TAIL)]
    return None


@functools.lru_cache(maxsize=64)
def _reading_frame(voice: str, language: str) -> tuple[str, str, str] | None:
    """One reading of a menu (the script said inside a <Gather>) as the builder writes
    it, cut around the action URL and the text; None when a mark appears in the voice
    or language (then documents are built whole)."""
    response = VoiceResponse()
    gather = response.gather(
        num_digits=1,
        action=_ACTION_MARK,
        method="POST",
        timeout=GATHER_TIMEOUT_SECONDS,
        finish_on_key="",
        language=language,
    )
    gather.say(_FRAME_MARK, voice=voice, language=language)
    verbs = _verbs_of(str(response))
    if verbs is None or verbs.count(_ACTION_MARK) != 1 or verbs.count(_FRAME_MARK) != 1:
        return None
    before, _, rest = verbs.partition(_ACTION_MARK)
    middle, _, after = rest.partition(_FRAME_MARK)
    return (before, middle, after) if _FRAME_MARK not in before else None


def _readings_xml(
    script: CallScript, speech: Voice, action: Callable[[int], str], first: int
) -> list[str] | None:
    """The verbs `_readings` builds, from the reading frame; None without a frame."""
    frame = _reading_frame(speech.voice, speech.language)
    if frame is None:
        return None
    text = render_script(script.script_template, script.contact)
    if not text.strip():
        text = DEFAULT_MESSAGE
    before, middle, after = frame
    said = xml_escape(text)
    return [
        before + _escape_attr(action(read)) + middle + said + after
        for read in range(first, script.menu_repeats + 1)
    ]


def _say_xml(text: str, speech: Voice) -> list[str] | None:
    """The verbs `_say` builds (none for blank text), from the say frame."""
    if not text.strip():
        return []
    frame = _say_frame(speech.voice, speech.language)
    if frame is None:
        return None
    before, after = frame
    if not (before.startswith(_DOCUMENT_HEAD) and after.endswith(_DOCUMENT_TAIL)):
        return None
    return [before[len(_DOCUMENT_HEAD) :] + xml_escape(text) + after[: -len(_DOCUMENT_TAIL)]]


# What a call says (the store's call_for_twiml), or None for an unknown call.
ScriptLookup = Callable[[uuid.UUID], Awaitable[CallScript | None]]
# Records a key press (the store's apply_key): one statement.
KeyRecorder = Callable[[uuid.UUID, KeyPress], Awaitable[KeyApplied]]


@dataclass(frozen=True)
class CallRequests:
    """What a call says and where the carrier reports on it, for one daemon.

    `public_url` is the address the carrier reaches (no trailing slash); every URL
    carries `?call_id=<uuid>`, which the callback signature covers. `voice` and
    `language` are the configuration's, for campaigns without their own."""

    public_url: str
    voice: str
    language: str
    lookup: ScriptLookup
    record_key: KeyRecorder | None = None

    def speech(self, script: CallScript) -> Voice:
        """The campaign's voice and language, else the configuration's."""
        return Voice(script.voice or self.voice, script.language or self.language)

    def _action(self, call_id: uuid.UUID, keys: int) -> Callable[[int], str]:
        return lambda read: gather_url(self.public_url, call_id, read=read, keys=keys)

    def build(self, call: ClaimedCall) -> DialRequest:
        """The carrier request for a claimed call: its TwiML inline when it fits and
        does not depend on who answers, else the URL the carrier fetches it from;
        DetectMessageEnd when a machine gets the voicemail message; the recording
        callback only when the campaign records."""
        script = call.script
        query = f"?call_id={call.id}"
        doc = None
        if not script.leaves_voicemail:
            doc = call_document(script, self.speech(script), self._action(call.id, 0))
        inline = doc is not None and fits_inline(doc)
        return DialRequest(
            to=call.contact.phone_number,
            from_=call.from_number,
            status_callback_url=f"{self.public_url}/twilio/status{query}",
            twiml=doc if inline else None,
            twiml_url=None if inline else f"{self.public_url}/twilio/twiml{query}",
            timeout_seconds=call.ring_timeout_seconds,
            time_limit_seconds=call.time_limit_seconds,
            machine_detection=call.machine_detection,
            detect_message_end=script.leaves_voicemail,
            record=call.record_calls,
            recording_callback_url=(
                f"{self.public_url}/twilio/recording{query}" if call.record_calls else None
            ),
        )

    async def document(self, call_id: uuid.UUID, answered_by: str | None = None) -> str | None:
        """The TwiML document of a call (served at /twilio/twiml) for the carrier's
        `AnsweredBy`; None when the call is unknown."""
        script = await self.lookup(call_id)
        if script is None:
            return None
        return call_document(script, self.speech(script), self._action(call_id, 0), answered_by=answered_by)

    async def answer_key(self, call_id: uuid.UUID, press: KeyPress) -> KeyAnswer:
        """Record a key press (one statement) and answer it with the next document. A
        press that records nothing (replayed, late, unknown call) hears a hang-up:
        the call it belongs to, if any, has moved on."""
        if self.record_key is None:
            raise RuntimeError("CallRequests.record_key is not wired")
        applied = await self.record_key(call_id, press)
        script = applied.script
        if applied.result is not ApplyResult.APPLIED or script is None or script.menu is None:
            return KeyAnswer(hangup_document(), applied)
        try:
            menu = parse_menu(script.menu)
            document = key_document(
                script,
                menu,
                press,
                self.speech(script),
                lambda read, keys: gather_url(self.public_url, call_id, read=read, keys=keys),
            )
        except (MenuError, TemplateError) as exc:
            # The menu or a text was changed into something invalid during the call
            # (housekeeping stops the campaign for it): end the call cleanly.
            log.error("menu_unusable_during_call", call_id=str(call_id), error=str(exc))
            document = hangup_document()
        return KeyAnswer(document, applied)
