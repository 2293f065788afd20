"""A notifier that records its calls, as a team's Slack or e-mail notifier would be configured."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from airflow.sdk import BaseNotifier


class RecordingNotifier(BaseNotifier):
    """Appends each call's rendered ``text`` to the JSON-lines file ``path``."""

    template_fields = ("text",)

    def __init__(self, *, path: str, text: str) -> None:
        super().__init__()
        self.path = path
        self.text = text

    def notify(self, context: dict[str, Any]) -> None:
        with Path(self.path).open("a") as f:
            f.write(json.dumps({"text": self.text, "dag_id": context["dag"].dag_id}) + "\n")
