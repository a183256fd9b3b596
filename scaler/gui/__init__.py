"""``scaler_gui`` / ``scaler_ui``: a web dashboard of a scheduler, with the standard library only.

One ``http.server`` process follows the scheduler's monitor address and serves a single
self-contained page (``static/``: plain HTML, CSS and JavaScript, SVG and canvas charts;
nothing is fetched from elsewhere, so it works air-gapped), the latest snapshot as JSON and
a Server-Sent Events stream of snapshots. See :mod:`.server`.
"""
