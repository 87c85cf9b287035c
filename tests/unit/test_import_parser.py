"""The import parser's budgets, and its process: a file with too many JSON values is refused before it is built,
and what still needs too much memory fails in the child with a reason, not in the server."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import tracemalloc
import zipfile

import msgspec
import pytest

from chatapp.history import import_parser
from chatapp.history.export import EXPORT_VERSION
from chatapp.history.import_parser import FRAME_PREFIX, Outcome, UnimportableFile, frame_length, parse_upload
from chatapp.history.service import MAX_TITLE_LENGTH
from tests.factories import chatgpt_conversation
from tests.support import ROOT


def run_child(document: bytes, *, setup: str = "") -> Outcome:
    """`python -m chatapp.history.import_parser` as the server runs it, `setup` first (e.g. a smaller limit)."""
    code = f"import sys\nimport chatapp.history.import_parser as p\n{setup}\nsys.exit(p.main())"
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps({"filename": "c.json"}).encode() + b"\n" + document,
        capture_output=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    )
    length = frame_length(done.stdout[:FRAME_PREFIX])
    return msgspec.json.decode(done.stdout[FRAME_PREFIX : FRAME_PREFIX + length], type=Outcome)


def test_a_file_with_more_json_values_than_the_budget_is_refused_before_it_is_parsed() -> None:
    lists = b"[" + b"[]," * import_parser.MAX_JSON_VALUES + b"[]]"  # 9 MB, 3 million lists if parsed
    began = time.monotonic()
    with pytest.raises(UnimportableFile) as refused:
        parse_upload("conversations.json", lists)
    assert time.monotonic() - began < 1.0  # counted, not built (json.loads takes seconds and ~200 MiB)
    assert refused.value.status_code == 413
    assert "more than 3,000,000 JSON values" in str(refused.value)


def test_the_budget_counts_every_file_of_a_zip_together() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for n in range(4):  # each valid and under the budget, together over it
            conversation = json.dumps(chatgpt_conversation(f"c{n}")).encode()
            junk = b', "junk": [' + b"[]," * (import_parser.MAX_JSON_VALUES // 3) + b"[]]}"
            archive.writestr(f"{n}.json", conversation[:-1] + junk)
    with pytest.raises(UnimportableFile) as refused:
        parse_upload("all.zip", buffer.getvalue())
    assert refused.value.status_code == 413
    assert "JSON values" in str(refused.value)


def test_what_still_needs_too_much_memory_fails_in_the_child_with_a_reason() -> None:
    # Budget lifted, memory lowered: 2 million lists need ~150 MiB, more than the 100 MiB of address space
    # left above the interpreter.
    setup = (
        "p.MAX_JSON_VALUES = 10**9\n"
        "size = next(line for line in open('/proc/self/status') if line.startswith('VmSize:')).split()[1]\n"
        "p.MEMORY_LIMIT = int(size) * 1024 + 100 * 2**20\n"
    )
    outcome = run_child(b"[" + b"[]," * 2_000_000 + b"[]]", setup=setup)
    assert outcome == Outcome(error="Reading the file needs more memory than an import may use.", status=413)


def test_the_child_answers_how_many_conversations_follow() -> None:
    document = {"title": "t", "create_time": 1.7e9, "mapping": {}, "id": "x", "current_node": None}
    assert run_child(json.dumps([document]).encode()) == Outcome(conversations=1)


def test_the_parser_holds_titles_to_the_same_length_as_history() -> None:
    assert import_parser.MAX_TITLE_LENGTH == MAX_TITLE_LENGTH
    assert import_parser.EXPORT_VERSION == EXPORT_VERSION


def test_a_zip_bomb_is_refused_while_it_inflates() -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("conversations.json", b"[" + b"[]," * 16_000_000 + b"[]]")  # 46 MiB from 47 KB
    bomb = buffer.getvalue()
    tracemalloc.start()
    try:
        with pytest.raises(UnimportableFile) as refused:
            parse_upload("bomb.zip", bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20 * 1024 * 1024  # stopped after ~9 MB inflated, not all 46 MiB then counted
    assert "more than 3,000,000 JSON values" in str(refused.value)
