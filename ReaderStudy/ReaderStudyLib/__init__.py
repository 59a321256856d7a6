"""ReaderStudy module logic (no Qt)."""
