"""The live terminal UI (Textual). Imported only when a UI is drawn, so ``import loops``
and the other commands stay fast."""
