"""Webmail routers, one per resource (auth, mailbox, account, health)."""
