"""The `chatapp agent` worker's wiring, as far as it can be checked without a LiveKit server."""

from __future__ import annotations

import math
import types
import uuid
from typing import Any

import pytest
from livekit.agents.voice import room_io
from livekit.agents.worker import ServerEnvOption
from livekit.plugins import openai, silero

from chatapp import cli
from chatapp.agents.offline import OfflineResponder
from chatapp.core.settings import Settings, SettingsError
from chatapp.livekit import worker
from chatapp.livekit.forwarder import TranscriptForwarder

BASE = {"CHATAPP_SECRET_KEY": "s" * 40, "CHATAPP_DATA_DIR": "/nonexistent"}
LIVEKIT = {"LIVEKIT_URL": "ws://localhost:7880", "LIVEKIT_API_KEY": "key", "LIVEKIT_API_SECRET": "x" * 40}
SPEECH = {
    "CHATAPP_STT_BASE_URL": "http://127.0.0.1:9/v1",
    "CHATAPP_TTS_BASE_URL": "http://127.0.0.1:9/v1",
    "CHATAPP_TTS_VOICE": "alloy",
}


def test_speech_needs_both_stt_and_tts() -> None:
    assert not worker.speech_configured(Settings.from_env(BASE))
    assert not worker.speech_configured(Settings.from_env(BASE | {"CHATAPP_STT_BASE_URL": "http://stt/v1"}))
    assert worker.speech_configured(Settings.from_env(BASE | SPEECH))
    assert worker.speech_configured(Settings.from_env(BASE | {"CHATAPP_LLM_API_KEY": "sk-test"}))  # OpenAI


async def test_a_voice_session_has_stt_llm_tts_and_silero_vad_from_the_wheel() -> None:
    settings = Settings.from_env(BASE | SPEECH)
    session = worker.build_session(settings, None)
    assert isinstance(session.stt, openai.STT)
    assert isinstance(session.tts, openai.TTS)
    assert isinstance(session.llm, OfflineResponder)  # no LLM configured: the offline demo model
    assert isinstance(session.vad, silero.VAD)  # loaded from the model file in the wheel, no download
    assert session.stt.capabilities.streaming is False  # plain /audio/transcriptions, turns cut by the VAD


async def test_without_speech_settings_the_session_is_text_only() -> None:
    session = worker.build_session(Settings.from_env(BASE), None)
    assert session.stt is None
    assert session.tts is None
    options = worker.room_options(Settings.from_env(BASE), TranscriptForwarder("http://x", "t"), "")
    assert options.get_audio_input_options() is None
    assert options.get_audio_output_options() is None
    assert options.get_text_input_options() is not None


def test_room_options_forward_spoken_text_and_keep_the_agent_through_a_reload() -> None:
    forwarder = TranscriptForwarder("http://x", "t")
    user = str(uuid.uuid4())
    options = worker.room_options(Settings.from_env(BASE | SPEECH), forwarder, user)
    text_output = options.get_text_output_options()
    assert isinstance(text_output, room_io.TextOutputOptions)
    assert text_output.next_in_chain is not None
    assert text_output.next_in_chain.label == "chatapp-forwarder"
    assert options.participant_identity == user
    assert options.close_on_disconnect is False
    assert options.get_audio_input_options() is not None
    text_input = options.get_text_input_options()
    assert text_input is not None
    assert text_input.text_input_cb == forwarder.text_input_cb  # typed text keeps the browser's item id


def test_the_benchs_baseline_is_the_same_room_io_without_the_forwarder() -> None:
    settings = Settings.from_env(BASE | SPEECH | {"CHATAPP_AGENT_FORWARD_TRANSCRIPTS": "false"})
    assert settings.agent_forward_transcripts is False
    assert Settings.from_env(BASE).agent_forward_transcripts is True
    options = worker.room_options(settings, None, "")
    text_output = options.get_text_output_options()
    assert text_output is not None
    assert text_output.next_in_chain is None
    assert options.get_audio_input_options() is not None
    assert options.get_audio_output_options() is not None


def test_the_server_registers_under_the_agent_name_for_explicit_dispatch() -> None:
    settings = Settings.from_env(BASE | LIVEKIT | {"CHATAPP_AGENT_NAME": "travel-agent"})
    server = worker.build_server(settings)
    assert server._agent_name == "travel-agent"
    assert server._entrypoint_fnc is worker.entrypoint


def test_turn_detection_is_the_vads_silence_when_asked_else_livekits_end_of_turn_model() -> None:
    vad_session = worker.build_session(Settings.from_env(BASE | SPEECH | {"CHATAPP_TURN_DETECTION": "vad"}), None)
    model_session = worker.build_session(Settings.from_env(BASE | SPEECH), None)
    assert vad_session.turn_detection == "vad"
    assert model_session.turn_detection is not None
    assert not isinstance(model_session.turn_detection, str)  # the default TurnDetector
    with pytest.raises(SettingsError, match="CHATAPP_TURN_DETECTION"):
        Settings.from_env(BASE | {"CHATAPP_TURN_DETECTION": "silence"})


def test_the_server_takes_its_capacity_and_health_address_from_settings() -> None:
    capacity = {
        "CHATAPP_AGENT_LOAD_THRESHOLD": "inf",
        "CHATAPP_AGENT_IDLE_PROCESSES": "1",
        "CHATAPP_AGENT_HEALTH_HOST": "127.0.0.1",
        "CHATAPP_AGENT_HEALTH_PORT": "0",
    }
    server = worker.build_server(Settings.from_env(BASE | LIVEKIT | capacity))
    assert (server._load_threshold, server._num_idle_processes) == (math.inf, 1)
    assert (server._host, server._port) == ("127.0.0.1", 0)


def test_unset_capacity_settings_keep_livekit_agents_defaults_for_production_and_dev() -> None:
    server = worker.build_server(Settings.from_env(BASE | LIVEKIT))
    production = [ServerEnvOption.getvalue(v, False) for v in (server._load_threshold, server._port)]
    dev = [ServerEnvOption.getvalue(v, True) for v in (server._load_threshold, server._num_idle_processes)]
    assert (production, server._host) == ([0.7, 8081], "")
    assert dev == [math.inf, 0]


def test_with_max_jobs_the_load_is_the_share_of_conversations_running_and_full_at_max() -> None:
    server = worker.build_server(Settings.from_env(BASE | LIVEKIT | {"CHATAPP_AGENT_MAX_JOBS": "4"}))
    load = server._load_fnc
    assert load is not None
    running: list[object] = []
    server_view: Any = types.SimpleNamespace(active_jobs=running)
    loads = []
    for _ in range(5):
        loads.append(load(server_view))
        running.append(object())
    assert loads == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert server._load_threshold == 1.0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CHATAPP_AGENT_MAX_JOBS", "0"),
        ("CHATAPP_AGENT_LOAD_THRESHOLD", "0"),
        ("CHATAPP_AGENT_IDLE_PROCESSES", "-1"),
        ("CHATAPP_AGENT_HEALTH_PORT", "x"),
    ],
)
def test_a_bad_capacity_setting_is_a_clear_configuration_error(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env(BASE | LIVEKIT | {name: value})


async def test_a_job_with_bad_metadata_is_refused() -> None:
    reasons: list[str] = []
    job = types.SimpleNamespace(metadata="not json", room=types.SimpleNamespace(name="chat-x"))
    ctx: Any = types.SimpleNamespace(job=job, shutdown=reasons.append)
    await worker.entrypoint(ctx)
    assert reasons == ["bad dispatch metadata"]


def test_chatapp_agent_needs_the_livekit_settings(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "get_settings", lambda: Settings.from_env(BASE))
    monkeypatch.setattr(cli, "_setup_logging", lambda settings: None)
    assert cli.main(["agent"]) == 2
    assert "LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET" in capsys.readouterr().err
