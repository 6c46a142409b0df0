"""The demo's task columns (no heavy imports: ``robustmerge.table --layout demo`` reads them)."""

DEMO_SEEN = ("Colors", "Shapes", "Count", "Locate", "Read", "Choice", "Caption")
DEMO_UNSEEN = ("ColorShape", "CountColor", "ReadChoice")
