"""The simulator plays the callee: it runs the TwiML it is given as Twilio does, with
per-number behaviours and machine detection, over real HTTP with the real twilio
package. A small aiohttp app plays the daemon's side: it serves TwiML built with
twilio's VoiceResponse and refuses (403) any request whose signature does not validate
with twilio's RequestValidator."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

from dialer.carrier.simulator import Callee, Press, RunningSimulator, SimCall, start_simulator
from dialer.config import SimulatorSettings
from tests.integration.carrier_helpers import ACCOUNT, FAST, FROM, TOKEN, sim  # noqa: F401 - fixture used by name

TO = "+34911200001"
PROMPT = (
    "Tiene una cita el lunes a las diez. Pulse 1 para confirmar, 2 para cancelar o asterisco para repetir."
)
CONFIRMED = "Su cita queda confirmada. Hasta pronto."
NO_ANSWER = "No hemos recibido respuesta."
VOICEMAIL = "Le llamamos de la clínica para recordarle su cita del lunes."
ES = {"language": "es-ES", "voice": "Polly.Lucia"}


@dataclass
class Hit:
    """One request the daemon's side accepted."""

    path: str
    url: str
    method: str
    params: dict[str, str]


Responder = Callable[[Hit], str]


@dataclass
class App:
    """The daemon's side of a call: TwiML per path, every request signature-checked."""

    validator: RequestValidator
    url: str = ""
    routes: dict[str, Responder] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)

    def at(self, path: str) -> list[Hit]:
        """Accepted requests on one path, in arrival order."""
        return [h for h in self.hits if h.path == path]

    async def handle(self, request: web.Request) -> web.Response:
        url = self.url + request.path_qs
        if request.method == "POST":
            params = {k: str(v) for k, v in (await request.post()).items()}
            valid = self.validator.validate(url, params, request.headers.get("X-Twilio-Signature", ""))
        else:
            params = dict(request.query)
            valid = self.validator.validate(url, {}, request.headers.get("X-Twilio-Signature", ""))
        if not valid:
            self.rejected.append(request.path_qs)
            return web.Response(status=403)
        hit = Hit(request.path, url, request.method, params)
        self.hits.append(hit)
        responder = self.routes.get(request.path)
        body = responder(hit) if responder else str(VoiceResponse())
        return web.Response(text=body, content_type="application/xml")


async def serve(token: str) -> tuple[App, web.AppRunner]:
    """An App on an ephemeral loopback port checking signatures with `token`."""
    app = App(RequestValidator(token))
    web_app = web.Application()
    web_app.router.add_route("*", "/{tail:.*}", app.handle)
    runner = web.AppRunner(web_app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    app.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    return app, runner


@pytest.fixture
async def app() -> AsyncIterator[App]:
    """The daemon's side, validating with the simulator's auth token."""
    served, runner = await serve(TOKEN)
    yield served
    await runner.cleanup()


@pytest.fixture
async def client(sim: RunningSimulator) -> AsyncIterator[Client]:
    """A plain twilio-python client on the simulator."""
    http = AsyncTwilioHttpClient()
    c = Client(ACCOUNT, TOKEN, http_client=http, environment={})
    c.api.base_url = sim.url
    yield c
    await http.close()


async def place(
    sim: RunningSimulator, client: Client, app: App, to: str = TO, path: str = "/voice", **extra: Any
) -> SimCall:
    """Create a call whose TwiML is at `path` on the app, wait until it is over, and
    return the simulator's record of it."""
    created = await client.calls.create_async(
        to=to,
        from_=FROM,
        url=app.url + path,
        status_callback=app.url + "/status",
        status_callback_event=["initiated", "ringing", "answered", "completed"],
        **extra,
    )
    await sim.simulator.wait_idle(5)
    return sim.simulator.call(created.sid)


def menu(action: str = "/gather", **gather: Any) -> str:
    """The appointment menu: the prompt inside a one-digit Gather, then a goodbye."""
    r = VoiceResponse()
    g = r.gather(num_digits=1, action=action, method="POST", timeout=3, **ES, **gather)
    g.say(PROMPT, **ES)
    r.say(NO_ANSWER, **ES)
    r.hangup()
    return str(r)


def menu_answer(hit: Hit) -> str:
    """The gather action: `*` repeats the menu, 1 confirms, anything else says goodbye."""
    if hit.params["Digits"] == "*":
        return menu()
    r = VoiceResponse()
    r.say(CONFIRMED if hit.params["Digits"] == "1" else "Hasta luego.", **ES)
    r.hangup()
    return str(r)


async def test_press_1_posts_digits_and_the_answer_is_heard(
    sim: RunningSimulator, client: Client, app: App
) -> None:
    """A callee pressing 1: the gather action gets Digits=1 with the usual signed
    params, its returned <Say> is heard, and the call completes."""
    sim.simulator.script(TO, ["press:1"])
    app.routes.update({"/voice": lambda hit: menu(), "/gather": menu_answer})
    call = await place(sim, client, app)
    (action,) = app.at("/gather")
    assert action.params["Digits"] == "1"
    assert {k: action.params[k] for k in ("CallSid", "AccountSid", "From", "To", "CallStatus", "Direction")} == {
        "CallSid": call.sid, "AccountSid": ACCOUNT, "From": FROM, "To": TO, "CallStatus": "in-progress",
        "Direction": "outbound-api",
    }  # fmt: skip
    assert action.params["ApiVersion"] == "2010-04-01"
    assert call.heard("su cita queda confirmada")
    assert not call.heard(NO_ANSWER)
    assert (call.status, call.keys, call.ended_by) == ("completed", ["1"], "hangup")
    assert [h.params["CallStatus"] for h in app.at("/status")] == [
        "initiated",
        "ringing",
        "in-progress",
        "completed",
    ]
    assert app.rejected == []


async def test_star_repeats_the_menu_then_1_confirms(sim: RunningSimulator, client: Client, app: App) -> None:
    """`press:*,1` presses * at the first gather (the document repeats the menu) and
    1 at the second: two signed action requests, the menu heard twice."""
    sim.simulator.script(TO, [Callee.press("*", "1")])
    app.routes.update({"/voice": lambda hit: menu(), "/gather": menu_answer})
    call = await place(sim, client, app)
    assert [h.params["Digits"] for h in app.at("/gather")] == ["*", "1"]
    assert call.said() == [PROMPT, PROMPT, CONFIRMED]
    assert call.keys == ["*", "1"]
    assert app.rejected == []


async def test_no_key_falls_through_then_redirect_repeats(
    sim: RunningSimulator, client: Client, app: App
) -> None:
    """A callee pressing nothing: the gather times out, execution goes on with the verb
    after it; a <Redirect> fetches the next document (signed), which ends the call."""

    def voice(hit: Hit) -> str:
        r = VoiceResponse()
        r.gather(num_digits=1, action="/gather", timeout=2).say(PROMPT, **ES)
        if hit.params.get("attempt") == "2" or "attempt=2" in hit.url:
            r.say(NO_ANSWER, **ES)
            r.hangup()
        else:
            r.redirect("/voice?attempt=2", method="POST")
        return str(r)

    sim.simulator.script(TO, ["silent"])
    app.routes["/voice"] = voice
    call = await place(sim, client, app)
    assert app.at("/gather") == []
    assert [h.url for h in app.at("/voice")] == [app.url + "/voice", app.url + "/voice?attempt=2"]
    assert [r.kind for r in call.requests() if r.kind != "status"] == ["twiml", "redirect"]
    assert call.said() == [PROMPT, PROMPT, NO_ANSWER]
    assert (call.keys, call.ended_by, call.status) == ([], "hangup", "completed")
    assert app.rejected == []


async def test_hang_up_mid_script_makes_no_gather_request(
    sim: RunningSimulator, client: Client, app: App
) -> None:
    """`hangup:2` leaves two seconds into the prompt: no action request, the prompt
    marked interrupted, the call completed with a 2-second duration."""
    sim.simulator.script(TO, [Callee.hangs_up(2)])
    app.routes.update({"/voice": lambda hit: menu(), "/gather": menu_answer})
    call = await place(sim, client, app)
    assert app.at("/gather") == []
    (prompt,) = [h for h in call.transcript if h.verb == "Say"]
    assert (prompt.text, prompt.interrupted, prompt.in_gather) == (PROMPT, True, True)
    assert (call.status, call.duration, call.ended_by) == ("completed", 2, "callee")
    assert app.at("/status")[-1].params["CallDuration"] == "2"


async def test_a_key_pressed_during_the_prompt_interrupts_it(
    sim: RunningSimulator, client: Client, app: App
) -> None:
    """Barge-in: `press:1@2` presses two seconds into a long prompt; the prompt stops,
    the verbs after it in the gather are never spoken, and the action comes at once."""

    def voice(hit: Hit) -> str:
        r = VoiceResponse()
        g = r.gather(num_digits=1, action="/gather")
        g.say(PROMPT, **ES)
        g.pause(length=1)
        g.say("Segunda parte del menú.", **ES)
        return str(r)

    sim.simulator.script(TO, ["press:1@2"])
    app.routes.update({"/voice": voice, "/gather": menu_answer})
    call = await place(sim, client, app)
    assert [h.params["Digits"] for h in app.at("/gather")] == ["1"]
    spoken = [(h.verb, h.text, h.interrupted) for h in call.transcript if h.in_gather]
    assert spoken == [("Say", PROMPT, True)]
    assert call.said() == [PROMPT, CONFIRMED]


async def test_machine_detect_message_end_fetches_twiml_after_the_beep(
    sim: RunningSimulator, client: Client, app: App
) -> None:
    """DetectMessageEnd: a machine's call fetches its TwiML only after the greeting and
    beep, with AnsweredBy=machine_end_beep (callbacks too), so the whole voicemail text
    is recorded; a human is reported as AnsweredBy=human and gets the menu."""

    def voice(hit: Hit) -> str:
        if hit.params.get("AnsweredBy", "").startswith("machine_end"):
            r = VoiceResponse()
            r.say(VOICEMAIL, **ES)
            r.hangup()
            return str(r)
        return menu()

    machine, human = "+34911200002", "+34911200003"
    sim.simulator.script(machine, [Callee.machine(greeting=8)])
    sim.simulator.script(human, ["press:1"])
    app.routes.update({"/voice": voice, "/gather": menu_answer})
    vm = await place(sim, client, app, to=machine, machine_detection="DetectMessageEnd")
    person = await place(sim, client, app, to=human, machine_detection="DetectMessageEnd")

    (fetch,) = [h for h in app.at("/voice") if h.params["To"] == machine]
    assert fetch.params["AnsweredBy"] == "machine_end_beep"
    assert int(fetch.params["MachineDetectionDuration"]) >= 8000
    assert vm.voicemail() == [VOICEMAIL] and vm.heard("recordarle su cita")
    assert vm.beep_at == 8 and vm.transcript[0].at > vm.beep_at
    answered = [h.params.get("AnsweredBy") for h in app.at("/status") if h.params["To"] == machine]
    assert answered[-2:] == ["machine_end_beep", "machine_end_beep"]  # in-progress, completed
    assert vm.duration is not None and vm.duration >= 9

    (human_fetch,) = [h for h in app.at("/voice") if h.params["To"] == human]
    assert human_fetch.params["AnsweredBy"] == "human"
    assert person.heard(CONFIRMED) and person.answered_by == "human"
    assert app.rejected == []


async def test_machine_without_detection_talks_over_the_greeting(
    sim: RunningSimulator, client: Client, app: App
) -> None:
    """Without DetectMessageEnd the TwiML runs at pick-up: a short message is over
    before the machine starts recording, so its voicemail is empty."""

    def voice(hit: Hit) -> str:
        r = VoiceResponse()
        r.say("Hola.", **ES)
        return str(r)

    sim.simulator.script(TO, ["machine:8:silence"])
    app.routes["/voice"] = voice
    call = await place(sim, client, app)
    assert "AnsweredBy" not in app.at("/voice")[0].params
    assert call.said() == ["Hola."] and call.voicemail() == []


async def test_dial_records_the_number_and_requests_its_action(
    sim: RunningSimulator, client: Client, app: App
) -> None:
    """<Dial> connects to its number (recorded with callerId), then requests its action
    with DialCallStatus/Duration and runs the answer; without an action, a busy leg
    falls through to the next verb."""
    agent, busy = "+34911299999", "+34911299998"
    sim.simulator.script(busy, ["busy"])

    def voice(hit: Hit) -> str:
        r = VoiceResponse()
        r.say("Le pasamos con un agente.", **ES)
        r.dial(busy, caller_id=FROM)
        r.say("Probamos otra línea.", **ES)
        d = r.dial(caller_id="+34910000009", action="/dialed", timeout=20)
        d.number(agent)
        return str(r)

    def dialed(hit: Hit) -> str:
        r = VoiceResponse()
        r.say("Gracias por su llamada.", **ES)
        return str(r)

    sim.simulator.script(TO, ["silent"])
    app.routes.update({"/voice": voice, "/dialed": dialed})
    call = await place(sim, client, app)
    assert [(d.number, d.caller_id, d.status) for d in call.dialed] == [
        (busy, FROM, "busy"), (agent, "+34910000009", "completed"),
    ]  # fmt: skip
    (action,) = app.at("/dialed")
    assert action.params["DialCallStatus"] == "completed"
    assert action.params["DialCallSid"] == call.dialed[1].sid
    assert int(action.params["DialCallDuration"]) == round(call.dialed[1].seconds) >= 1
    assert call.said() == ["Le pasamos con un agente.", "Probamos otra línea.", "Gracias por su llamada."]
    assert (call.ended_by, app.rejected) == ("document", [])


async def test_relative_action_url_and_get_method_are_signed_like_twilio(
    sim: RunningSimulator, client: Client, app: App
) -> None:
    """A relative action resolves against the document's URL; a GET action carries the
    params in its query string, and its signature (over the full URL) validates."""

    def voice(hit: Hit) -> str:
        r = VoiceResponse()
        r.gather(num_digits=2, action="next?step=2", method="GET", finish_on_key="#").say(
            "Marque dos cifras."
        )
        return str(r)

    def step(hit: Hit) -> str:
        r = VoiceResponse()
        r.say(f"Ha marcado {hit.params['Digits']}.")
        return str(r)

    sim.simulator.script(TO, ["press:42"])
    app.routes.update({"/ivr/voice": voice, "/ivr/next": step})
    call = await place(sim, client, app, path="/ivr/voice?call_id=7")
    (action,) = app.at("/ivr/next")
    assert action.method == "GET"
    assert action.url.startswith(app.url + "/ivr/next?step=2&")
    assert (action.params["step"], action.params["Digits"], action.params["CallSid"]) == ("2", "42", call.sid)
    assert call.heard("Ha marcado 42") and app.rejected == []


async def test_gather_finish_key_timeout_and_empty_result(
    sim: RunningSimulator, client: Client, app: App
) -> None:
    """Gather input rules: digits then finishOnKey submit without it (FinishedOnKey=#);
    only the finishOnKey is no input; actionOnEmptyResult posts an empty Digits."""
    keyed, only_hash, empty = "+34911200011", "+34911200012", "+34911200013"
    sim.simulator.script(keyed, [Callee.press(Press("123#", after=0.5))])
    sim.simulator.script(only_hash, ["press:#"])
    sim.simulator.script(empty, ["silent"])

    def voice(hit: Hit) -> str:
        r = VoiceResponse()
        g = r.gather(action="/gather", timeout=2, action_on_empty_result=hit.params["To"] == empty)
        g.say("Marque su código y la almohadilla.")
        r.say("Sin código.")
        return str(r)

    def gathered(hit: Hit) -> str:
        r = VoiceResponse()
        r.say(f"Código {hit.params['Digits'] or 'vacío'}.")
        return str(r)

    app.routes.update({"/voice": voice, "/gather": gathered})
    a = await place(sim, client, app, to=keyed)
    b = await place(sim, client, app, to=only_hash)
    c = await place(sim, client, app, to=empty)
    got = {h.params["To"]: (h.params["Digits"], h.params["FinishedOnKey"]) for h in app.at("/gather")}
    assert got == {keyed: ("123", "#"), empty: ("", "")}
    assert a.said()[-1] == "Código 123."
    assert b.said()[-1] == "Sin código." and b.keys == ["#"]
    assert c.said()[-1] == "Código vacío."


async def test_every_voice_response_construct_is_accepted(
    sim: RunningSimulator, client: Client, app: App
) -> None:
    """A document using what VoiceResponse nests (language/voice, SSML inside <Say>,
    <Play> of a URL and of digits, <Pause>, <Dial><Number>, <Redirect>, <Hangup>)
    runs without an application error, verb by verb."""

    def voice(hit: Hit) -> str:
        r = VoiceResponse()
        s = r.say("Hola", **ES, loop=2)
        s.break_(time="1s")
        s.prosody("despacio", rate="slow")
        g = r.gather(num_digits=1, action="/gather", timeout=1, input="dtmf", language="es-ES")
        g.say("Pulse una tecla", **ES)
        g.pause(length=1)
        g.play("https://example.invalid/tono.mp3")
        r.play(digits="ww1")
        r.pause(length=2)
        r.redirect("/second")
        return str(r)

    def second(hit: Hit) -> str:
        r = VoiceResponse()
        r.dial(caller_id=FROM).number("+34911288888")
        r.say("Adiós")
        r.hangup()
        r.say("never said")
        return str(r)

    sim.simulator.script(TO, ["silent"])
    app.routes.update({"/voice": voice, "/second": second})
    call = await place(sim, client, app)
    assert call.app_errors == []
    assert [h.verb for h in call.transcript] == [
        "Say", "Say", "Gather", "Say", "Pause", "Play", "Play", "Pause", "Redirect", "Dial", "Say", "Hangup",
    ]  # fmt: skip
    assert call.said()[:2] == ["Hola despacio", "Hola despacio"]
    assert call.transcript[0].attrs == {"language": "es-ES", "voice": "Polly.Lucia", "loop": "2"}
    assert [d.number for d in call.dialed] == ["+34911288888"]


@pytest.mark.parametrize(
    ("twiml", "code"),
    [
        ("<Response><Say>hola</Response>", 12100),
        ("<Speak>hola</Speak>", 12100),
        ('<!DOCTYPE r [<!ENTITY a "aaaa">]><Response><Say>&a;</Say></Response>', 12100),
        ("<Response><Dance/></Response>", 12200),
        ("<Response><Gather><Dial>+34911</Dial></Gather></Response>", 12200),
        ("<Response><Gather numDigits='1'><Say>x</Say></Gather></Response>", 11100),
    ],
)
async def test_bad_twiml_is_an_application_error(
    sim: RunningSimulator, client: Client, app: App, twiml: str, code: int
) -> None:
    """Malformed or invalid TwiML (and a gather action with nowhere to go, in an
    inline document) ends the call completed with an application error recorded."""
    sim.simulator.script(TO, ["press:1"])
    created = await client.calls.create_async(
        to=TO, from_=FROM, twiml=twiml, status_callback=app.url + "/status"
    )
    await sim.simulator.wait_idle(5)
    call = sim.simulator.call(created.sid)
    assert [e.code for e in call.app_errors] == [code]
    assert (call.status, call.ended_by) == ("completed", "error")
    assert app.at("/status")[-1].params["CallStatus"] == "completed"


async def test_a_refused_request_is_an_application_error(sim: RunningSimulator, client: Client) -> None:
    """The daemon's side refuses a request signed with another token (403): that is
    Twilio's 11200, the call ends; the validator really does check signatures."""
    other, runner = await serve("not-the-simulator-token")
    try:
        sim.simulator.script(TO, ["press:1"])
        other.routes["/voice"] = lambda hit: menu()
        call = await place(sim, client, other)
    finally:
        await runner.cleanup()
    assert other.rejected and other.hits == []
    assert [e.code for e in call.app_errors] == [11200]
    assert call.requests("twiml")[0].http_status == 403


async def test_listen_keeps_todays_duration(sim: RunningSimulator, client: Client, app: App) -> None:
    """An answered human with the default behaviour (listen) hears a document that only
    says something and stays on the line for the drawn duration, as before."""
    sim.simulator.settings = FAST.model_copy(update={"min_duration_seconds": 30, "max_duration_seconds": 30})
    sim.simulator.script(TO, ["answered"])

    def voice(hit: Hit) -> str:
        r = VoiceResponse()
        r.say("Hola, esto es un recordatorio.")
        return str(r)

    app.routes["/voice"] = voice
    call = await place(sim, client, app)
    assert call.callee == Callee.listen()
    assert call.said() == ["Hola, esto es un recordatorio."]
    assert (call.duration, call.ended_by) == (30, "callee")


async def test_default_mix_from_settings_picks_the_callee(app: App) -> None:
    """With `callees` in the settings, an answered call's callee is drawn from that mix."""
    settings = FAST.model_copy(update={"answered": 1, "busy": 0, "no_answer": 0, "failed": 0, "machine": 0})
    settings = SimulatorSettings.model_validate({**settings.model_dump(), "callees": {"press:2": 1}})
    running = await start_simulator(settings, account_sid=ACCOUNT, auth_token=TOKEN)
    http = AsyncTwilioHttpClient()
    c = Client(ACCOUNT, TOKEN, http_client=http, environment={})
    c.api.base_url = running.url
    try:
        app.routes.update({"/voice": lambda hit: menu(), "/gather": menu_answer})
        call = await place(running, c, app)
    finally:
        await http.close()
        await running.stop()
    assert call.callee == Callee.press("2")
    assert [h.params["Digits"] for h in app.at("/gather")] == ["2"]
