"""The export registry is the one list of formats: the conversation page's download links come from it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from jinja2 import Environment, FileSystemLoader, select_autoescape
from jinja2_fragments import render_block

from chatapp.conversations.queries import Conversation
from chatapp.core.paths import TEMPLATES_DIR
from chatapp.history import export
from chatapp.history.service import Detail


def links_html(conversation_id: uuid.UUID) -> str:
    env = Environment(loader=FileSystemLoader(TEMPLATES_DIR), autoescape=select_autoescape())
    return str(
        render_block(
            env,
            "history_detail.html",
            "export_links",
            conversation={"id": conversation_id},
            exporters=export.EXPORTERS.values(),
        )
    )


@pytest.fixture
def csv_format() -> Iterator[export.Exporter]:
    """A format registered the way a new one would be, removed again afterwards."""

    @export.exporter("csv", "CSV", "text/csv; charset=utf-8")
    def as_csv(detail: Detail) -> str:
        return "role,text\n"

    yield export.EXPORTERS["csv"]
    del export.EXPORTERS["csv"]


def test_the_page_links_every_registered_format_in_order() -> None:
    cid = uuid.uuid4()
    html = links_html(cid)
    for name, label in [("json", "JSON"), ("md", "Markdown"), ("txt", "Text")]:
        assert f'href="/history/{cid}/export/{name}" download data-testid="export-{name}">{label}</a>' in html
    assert html.index("export-json") < html.index("export-md") < html.index("export-txt")


def test_a_new_format_is_linked_once_registered(csv_format: export.Exporter) -> None:
    cid = uuid.uuid4()
    assert f'href="/history/{cid}/export/csv" download data-testid="export-csv">CSV</a>' in links_html(cid)
    assert csv_format.extension == "csv"
    started = datetime(2026, 11, 29, 9, 30, tzinfo=UTC)
    conversation = Conversation(
        id=cid,
        owner=uuid.uuid4(),
        room_name="r",
        system_prompt="",
        started_at=started,
        ended_at=started,
        title="Plan a trip",
        last_activity_at=started,
        last_seq=0,
        end_reason="new_chat",
        continued_from=None,
    )
    assert csv_format.render(Detail(conversation, [])) == "role,text\n"
    assert export.filename(Detail(conversation, []), csv_format.extension) == "chatapp-2026-11-29-plan-a-trip.csv"


def test_a_format_cannot_be_registered_twice() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        export.exporter("json", "JSON again", "application/json")(export.as_json)
