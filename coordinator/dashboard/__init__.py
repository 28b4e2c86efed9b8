"""The operator's dashboard: server-rendered HTML pages, inline SVG charts, the login cookie.

Pure rendering over :mod:`coordinator.services.overview`'s records; the routes live in
:mod:`coordinator.api.dashboard_routes`. No JavaScript, no CDN, no build step.
"""
