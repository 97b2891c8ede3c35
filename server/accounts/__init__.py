"""Accounts by phone: login codes and links, sessions, CSRF tokens, rate limits and
lock-outs (accounts.py), the SMS senders (sms.py), and the login pages and API."""
