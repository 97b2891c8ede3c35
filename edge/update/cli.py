"""qrgate-update: the station's updater (docs/updates.md).

  qrgate-update check  [--config /etc/qrgate/update.toml]   finish an interrupted update, then look for one
  qrgate-update status [--config ...] [--json]              what the updater last did, and why
"""

from __future__ import annotations

import json as json_module

from qrgate.cli import App, arg

app = App("qrgate-update", __doc__)

CONFIG = arg("--config", "-c", default="/etc/qrgate/update.toml", help="the updater's settings (optional file)")


@app.command("check", CONFIG)
def check(config: str) -> int:
    """Finish an update a power cut interrupted, then install a newer release if there is one.

    Exit status 0 when the station runs a kept release afterwards (nothing newer, or the
    new one kept, or a refusal that changed nothing), 1 when a release was rolled back
    or could not be installed.
    """
    from edge.update.settings import load_update_settings
    from edge.update.updater import Updater

    status = Updater(load_update_settings(config)).run()
    print(f"{status.get('state')}: {status.get('version', '')} {status.get('reason', '')}".strip())
    return 1 if status.get("state") in ("rolled_back", "failed") else 0


@app.command("status", CONFIG, arg("--json", action="store_true", help="the whole status as JSON"))
def status(config: str, json: bool) -> int:
    """Print the updater's last status: running and kept release, last state and its reason."""
    from edge.update.settings import load_update_settings
    from edge.update.updater import Updater

    current = Updater(load_update_settings(config)).status()
    if json:
        print(json_module.dumps(current, ensure_ascii=False, sort_keys=True))
    else:
        print(f"running {current.get('running', '?')} (kept: {current.get('good', '?')}); "
              f"last: {current.get('state', 'none')} {current.get('version', '')} {current.get('reason', '')}".strip())
    return 0


def main(argv=None) -> int:
    return app.main(argv)
