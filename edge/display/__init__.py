"""The station's 128x64 OLED: pure screen rendering (screens) and the panel drivers (panel)."""
