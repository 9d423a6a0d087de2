"""The Textual dashboard (installed as gitswarm.tui); reads and writes only through the state store."""
