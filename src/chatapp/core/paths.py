"""Where the project's non-Python files live (the package is installed editable from the checkout)."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
TEMPLATES_DIR = ROOT / "templates"
STATIC_DIR = ROOT / "static"
