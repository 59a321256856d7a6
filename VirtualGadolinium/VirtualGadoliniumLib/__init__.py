"""VirtualGadolinium logic package (MRML ⇄ neurocontrast core; no Qt)."""
