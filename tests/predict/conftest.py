"""The predict tests train their tiny checkpoint on the training tests' synthetic windows."""
import sys
from pathlib import Path

# tests/train/train_helpers.py, imported by name as the training tests do
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
