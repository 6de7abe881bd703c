"""`pinlife console`: the auditors' read-only web console (docs/audit.md).

    client.py  what it reads (the port) and the gRPC reads over the CLI's client module
    views.py   each page's data, from what it read and what the page asked
    app.py     the Starlette application: routes, templates, live events, safety
    templates/, static/ (static/vendor/: htmx and Chart.js, tools/console/vendor.py)

It holds no database credentials and imports no store: it is a client of
AuditService (and PinService.GetPinStatus), as the auditor's CLI is."""
