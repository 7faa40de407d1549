"""The operator's console at /admin: login, overview, campaigns, messages, accounts, carriers.
`install(app)` mounts it; `rollup.periodic` keeps the traffic roll-up it reads."""

from tikosms.console.routes import install

__all__ = ["install"]
