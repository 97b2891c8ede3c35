"""What every page shares: the app (app.py), the dependencies routes declare (deps.py),
the middleware, rendering (pages.py), translations (i18n.py), templates and static files."""
