"""The station's updater (docs/updates.md): checks the signed releases with TUF, installs
one beside the running release, switches to it atomically, keeps it only if the station
comes back healthy in time, and otherwise switches back by itself.

It runs apart from the station (``qrgate-update.service``, started by a timer and when
the station hears a release notice) and never imports the server.
"""
