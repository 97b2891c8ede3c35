"""A failed code check (login or invitation) to the audit trail, with the lock-out it
caused."""

from __future__ import annotations

from typing import Any

from server.accounts.accounts import AuthRefused, normalise_phone
from server.web.deps import Services, Visitor


def code_refused(svc: Services, who: Visitor, phone: str, exc: AuthRefused, action: str, **data: Any) -> None:
    """A failed code check to the audit trail (the number, the reason, never the code),
    and the lock-out it caused. Refusals of a locked number or address are not checked
    codes and stay out: their count is bounded by the lock, not by the attacker."""
    if not exc.counted:
        return
    phone = normalise_phone(phone)
    account = svc.accounts.account_for_phone(phone, create=False)
    svc.audit.record(action, account=account, ip=who.ip, phone=phone, reason=exc.reason, **data)
    if exc.locked_now:
        svc.audit.record("qrgate.account.locked", account=account, ip=who.ip, phone=phone,
                         minutes=svc.auth.lockout_s // 60)
