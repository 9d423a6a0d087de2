"""The Textual dashboard (installed as gitswarm.tui); reads and writes only through the state store.

Pure modules (tested without a terminal): clock, policy (which key acts when), view
(dashboard rows), detail (task detail text), completion (the end summary), actions
(events and finalize calls). Textual modules: app, dashboard, detail_screen, forms,
completion_screen. monitor opens it from the command line.
"""
